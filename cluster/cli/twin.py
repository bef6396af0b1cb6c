"""``opsloop twin``: simulate a fleet into a trace, and replay a trace through the twin.

``simulate`` writes JSON Lines samples (the trace format of ``cluster/telemetry/samples.py``);
``replay`` prints the twin's event log, one canonical JSON object per line (byte-identical across runs),
and reports every quarantined line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from cluster.cli import CliError

REPLAY_HELP = """Replay a JSON Lines trace through the twin and print its event log.

Every line is validated first; a bad line (bad JSON, NaN, out of range, wrong type, missing field,
duplicate or backwards timestamp, stuck sensor) is quarantined with its reason on stderr and the
rest is processed. Output is deterministic: two runs print identical bytes."""

SIMULATE_HELP = """Run the simulated fleet (the twin's physics) and write its telemetry as a JSON Lines trace.

Faults: KIND@SECONDS:TARGET[=VALUE], KIND one of cooling_degradation (node, flow fraction),
fan_failure (unit, fan %), supply_drift (unit, +°C), power_limit (GPU, W), link_degradation
(link such as n01-n02/ib0, bandwidth fraction), xid (GPU, XID code), stuck_sensor (GPU),
noisy_sensor (GPU, σ °C). Example: --fault cooling_degradation@20:n01=0.5"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("twin", help="simulate a fleet into a trace; replay a trace through the twin")
    tsub = p.add_subparsers(dest="twin_command", metavar="SUBCOMMAND", required=True)

    s = tsub.add_parser("simulate", help="write a simulated telemetry trace", description=SIMULATE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--nodes", type=int, default=2, help="nodes (default 2)")
    s.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    s.add_argument("--units", type=int, default=1, help="cooling units, serving nodes round-robin (default 1)")
    s.add_argument("--seconds", type=float, default=300.0, help="simulated seconds (default 300)")
    s.add_argument("--tick", type=float, default=1.0, help="seconds per sample (default 1)")
    s.add_argument("--fault", action="append", default=[], metavar="KIND@T:TARGET[=V]", help="a fault; repeatable")
    s.add_argument("--job-nodes", type=int, default=0,
                   help="group every N consecutive nodes into one job (0: no jobs, no link/job samples)")
    s.add_argument("--sensor-tau", type=float, default=15.0, help="sensor time constant τ in seconds (default 15)")
    s.add_argument("--noise", type=float, default=0.5, help="sensor noise σ in °C (default 0.5)")
    s.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    s.add_argument("--out", type=Path, default=None, help="trace file to write (default: stdout)")
    s.set_defaults(func=_simulate)

    r = tsub.add_parser("replay", help="replay a trace through the twin, print its events", description=REPLAY_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("trace", type=Path, help="JSON Lines trace (one sample per line)")
    r.add_argument("--json", action="store_true", help="one JSON object per event (default: a readable line)")
    r.add_argument("--sensor-tau", type=float, default=15.0, help="sensor time constant τ in seconds (default 15)")
    r.add_argument("--noise", type=float, default=0.5, help="expected sensor noise σ in °C (default 0.5)")
    r.add_argument("--realtime", action="store_true", help="pace the replay by the trace's timestamps")
    r.add_argument("--speed", type=float, default=1.0, help="with --realtime: trace seconds per second")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.set_defaults(func=_replay)


def _simulate(args: argparse.Namespace) -> int:
    from actors.twin.physics import Topology
    from cluster.telemetry.sim import Fault, Simulator

    if args.nodes < 1 or args.gpus_per_node < 1 or args.seconds <= 0 or args.tick <= 0:
        raise CliError("--nodes, --gpus-per-node, --seconds and --tick must be positive", code=2)
    try:
        topo = Topology.build(args.nodes, args.gpus_per_node, n_units=args.units)
        if args.job_nodes:
            topo.with_jobs(args.job_nodes)
        sim = Simulator(topo, [Fault.parse(f) for f in args.fault], seed=args.seed, sensor_tau_s=args.sensor_tau,
                        noise_c=args.noise, tick_s=args.tick)
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    ticks = int(round(args.seconds / args.tick))
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        for _ in tqdm(range(ticks), desc="simulate", unit="tick", file=sys.stderr, disable=ticks < 200):
            for sample in sim.step():
                out.write(json.dumps(sample.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
                                     separators=(",", ":")) + "\n")
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {ticks} ticks of {len(sim.names)} GPUs to {args.out}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    from actors.twin.estimator import EstimatorConfig
    from actors.twin.model import TwinModel
    from cluster.telemetry.replay import ReplaySource

    if not args.trace.is_file():
        raise CliError(f"no such trace: {args.trace}", code=2)
    if not (0 < args.sensor_tau <= 600):
        raise CliError("--sensor-tau must be in (0, 600] seconds", code=2)
    model = TwinModel(sensor_tau_s=args.sensor_tau, estimator=EstimatorConfig(noise_c=max(args.noise, 0.05)))
    src = ReplaySource(args.trace, realtime=args.realtime, speed=args.speed)
    size = args.trace.stat().st_size
    bar = tqdm(total=size, desc="replay", unit="B", unit_scale=True, file=sys.stderr,
               disable=args.no_progress or size < 5_000_000)
    write = sys.stdout.write

    async def run() -> None:
        while not src.done:
            samples = await src.read()
            for ev in model.ingest(samples):
                write(ev.to_json() + "\n" if args.json else f"{ev.ts:10.1f}  {ev.severity:8s} {ev.kind:28s} "
                      f"{ev.subject}\n")
            bar.update(sum(len(s.model_dump_json()) for s in samples) if bar.total and not bar.disable else 0)

    asyncio.run(run())
    bar.close()
    sys.stdout.flush()
    for q in src.quarantined:
        print(f"quarantined line {q.line}: {q.reason}: {q.detail}", file=sys.stderr)
    for source, st in src.validator.summary().items():
        reasons = ", ".join(f"{k}={v}" for k, v in st["by_reason"].items()) or "none"
        print(f"{source}: {st['accepted']} samples accepted, {st['quarantined']} quarantined ({reasons}), "
              f"{st['gaps']} sampling gaps", file=sys.stderr)
    return 0
