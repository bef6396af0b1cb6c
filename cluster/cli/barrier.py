"""``opsloop barrier``: measure the wait cost of a barrier of N Ray workers against theory.

The command's flags and their parsing (``--work`` spec strings into a
:class:`~actors.twin.barrier_theory.WorkDist`, ``--straggler`` factors), the run on Ray
(``cluster.barrier_experiment``) and the table, JSON or plot of the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.twin.barrier_theory import WorkDist
from cluster.cli import CliError

#: Worker counts drawn by ``--plot``.
PLOT_WORKERS = (1, 2, 4, 8, 16, 32)

_SPEC_HELP = "expected const:MS, exp:MS or lognormal:MS:SIGMA"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_ARITY = {"const": 1, "exp": 1, "lognormal": 2}


def parse_work(spec: str) -> WorkDist:
    """Parse ``const:MS``, ``exp:MS`` or ``lognormal:MS:SIGMA`` (MS = mean milliseconds).

    Raises:
        ValueError: Unknown kind, wrong arity, or a non-positive / non-numeric parameter.
    """
    parts = spec.strip().split(":")
    kind, args = parts[0].lower(), parts[1:]
    if kind not in _ARITY:
        raise ValueError(f"unknown work distribution {parts[0]!r} in {spec!r} ({_SPEC_HELP})")
    if len(args) != _ARITY[kind] or not all(re.fullmatch(_NUMBER, a.strip()) for a in args):
        raise ValueError(f"bad work spec {spec!r} ({_SPEC_HELP})")
    values = [float(a) for a in args]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"bad work spec {spec!r}: parameters must be finite")
    ms = values[0]
    if ms < 0 or (ms == 0 and kind != "const"):
        raise ValueError(f"bad work spec {spec!r}: MS must be {'>= 0' if kind == 'const' else '> 0'} milliseconds")
    if kind == "lognormal" and values[1] <= 0:
        raise ValueError(f"bad work spec {spec!r}: SIGMA must be > 0")
    return WorkDist(kind=kind, ms=ms, sigma=values[1] if kind == "lognormal" else None)  # type: ignore[arg-type]


def parse_straggler(spec: str) -> float:
    """Parse a straggler factor such as ``3x`` (one worker's work is multiplied by it).

    Raises:
        ValueError: Not a positive number followed by an optional ``x``.
    """
    match = re.fullmatch(rf"\s*({_NUMBER})\s*[xX]?\s*", spec)
    factor = float(match.group(1)) if match else float("nan")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"bad straggler {spec!r}: expected a positive factor like 3x")
    return factor


def register(subparsers: Any) -> None:
    """Add the ``barrier`` sub-command."""
    p = subparsers.add_parser(
        "barrier",
        help="measure barrier wait cost of N Ray workers against theory",
        description="N async worker actors do R rounds of work drawn from a distribution and wait at a "
        "barrier each round; the mean round (work + wait) is compared with E[max of N].",
    )
    p.add_argument("--workers", type=int, default=8, metavar="N", help="worker actors (default 8)")
    p.add_argument("--rounds", type=int, default=None, metavar="R",
                   help="rounds (default: enough for a 3%% std error of the mean round, 50..2000; "
                   "exp:20 gives 365 at N=4, 230 at N=8, 155 at N=16)")
    p.add_argument("--work", default="exp:20", metavar="SPEC",
                   help="const:MS, exp:MS or lognormal:MS:SIGMA; MS is the mean in ms (default exp:20)")
    p.add_argument("--straggler", default=None, metavar="Kx", help="multiply worker w00's work by K, e.g. 3x")
    p.add_argument("--seed", type=int, default=0, help="seed of the work draws (default 0)")
    p.add_argument("--work-mode", choices=("sleep", "cpu"), default="sleep",
                   help="sleep: stand-in for remote GPU nodes (default); cpu: burn this machine's CPU")
    p.add_argument("--address", default=None, help="join this Ray cluster (default: start a private local one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help=f"sweep N over {', '.join(map(str, PLOT_WORKERS))} and plot measured vs theory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, run the experiment (or the sweep) and print the result."""
    try:
        work = parse_work(args.work)
        straggler = parse_straggler(args.straggler) if args.straggler is not None else 1.0
    except ValueError as exc:
        raise CliError(str(exc), code=2) from None
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}", code=2)
    if args.rounds is not None and args.rounds < 1:
        raise CliError(f"--rounds must be >= 1, got {args.rounds}", code=2)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'opsloop[plot]'", code=2) from None

    # Imported here so `opsloop --help` does not pay for Ray.
    from cluster.barrier_experiment import ExperimentConfig, ray_session, run_experiment, run_sweep

    config = ExperimentConfig(workers=args.workers, rounds=args.rounds, work=work, straggler=straggler,
                              seed=args.seed, work_mode=args.work_mode)
    progress = not args.no_progress and not args.json
    # Ray's driver prints raylet warnings on stdout; keep stdout for our table / JSON.
    with contextlib.redirect_stdout(sys.stderr), ray_session(args.address):
        if args.plot is None:
            results = [run_experiment(config, progress=progress)]
        else:
            results = run_sweep(config, PLOT_WORKERS, progress=progress)
    rows = [r.model_dump() for r in results]
    if args.plot is not None:
        plot(rows, args.plot)
    if args.json:
        print(json.dumps(rows[0] if args.plot is None else rows, indent=2))
    else:
        print(table(rows))
        if args.plot is not None:
            print(f"plot written to {args.plot}")
    return 0


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A readable table: one line per experiment, then how the raw round splits."""
    head = (f"{'N':>3} {'rounds':>6} {'round ms':>9} {'theory':>7} {'ratio':>6} {'wait ms':>8} {'theory':>7} "
            f"{'p99 wait':>8} {'eff':>5} {'th.eff':>6} {'slowest':>12} | {'raw ms':>7} {'overhead':>8}")
    lines = [f"work {rows[0]['work']}" + (f", straggler {rows[0]['straggler']:g}x on {rows[0]['straggler_worker']}"
                                         if rows[0]["straggler_worker"] else "") + f", mode {rows[0]['work_mode']}",
             head]
    for r in rows:
        slowest, th = f"{r['slowest_worker']} {100 * (r['slowest_share'] or 0):.0f}%", r["theory"]
        lines.append(
            f"{r['workers']:>3} {r['rounds']:>6} {r['measured_round_ms']:>9.1f} {th['round_ms']:>7.1f} "
            f"{r['ratio']:>6.2f} {r['measured_wait_ms']:>8.1f} {th['wait_ms']:>7.1f} {r['p99_wait_ms']:>8.1f} "
            f"{r['efficiency']:>5.2f} {th['efficiency']:>6.2f} {slowest:>12} | {r['raw_round_ms']:>7.1f} "
            f"{r['overhead_ms']:>8.1f}")
    lines.append("round = common start to last arrival (work + wait); raw = dispatch to last reply, i.e. round + "
                 "Ray overhead (lead to the common start + reply tail). Zero-work raw round: "
                 + ", ".join(f"N={r['workers']} {r['zero_work_round_ms']:.1f} ms" for r in rows)
                 + f"; late starts: {sum(r['late_starts'] for r in rows)}.")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Measured vs theory wait cost and round time against N, written as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["workers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(ns, [r["theory"]["wait_ms"] for r in rows], "o--", label="theory E[max] − E[X]")
    left.plot(ns, [r["measured_wait_ms"] for r in rows], "s-", label="measured mean wait")
    left.plot(ns, [r["p99_wait_ms"] for r in rows], "^:", label="measured p99 wait")
    left.set(title="wait per worker per round", xlabel="workers N", ylabel="ms", xscale="log")
    right.plot(ns, [r["theory"]["round_ms"] for r in rows], "o--", label="theory E[max]")
    right.plot(ns, [r["measured_round_ms"] for r in rows], "s-", label="measured round (span)")
    right.plot(ns, [r["raw_round_ms"] for r in rows], "x:", label="raw round (incl. Ray overhead)")
    right.set(title="round time", xlabel="workers N", ylabel="ms", xscale="log")
    for ax in (left, right):
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"barrier cost, work {rows[0]['work']}" + (f", straggler {rows[0]['straggler']:g}x"
                                                             if rows[0]["straggler_worker"] else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
