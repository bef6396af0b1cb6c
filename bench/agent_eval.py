"""Held-out agent evaluation (issue #15 item 6): generated fault variants no test uses, scored against the fault.

Usage::

    .venv/bin/python bench/agent_eval.py --variants 20 --llm none
    .venv/bin/python bench/agent_eval.py --variants 8 --llm vllm [--model default|PATH] [--json OUT] [--answers F]

Each variant is one fault of ``cluster.telemetry.sim.Fault`` (the eight kinds in turn), target, severity and onset
drawn from its seed, on 2-4 nodes x 2-4 GPUs, 1-2 cooling units, a supply setpoint of 19-27 °C. Held-out seeds:
``--seed-base`` to ``--seed-base + N - 1`` (default 20000 on); a seed or fault spec that tests/ uses (the scenarios'
``made_with`` lines, ``seed=`` and fault strings in the test code) is refused. Simulator → TwinModel → IncidentBook
run to the first incident that needs a proposal, and the agent's own ``propose`` proposes. The ground truth (root
cause, action kinds that remedy it, what they may touch) comes from the injected fault, never from the planner.

Scored per variant: root cause, action kinds, targets, numbers (each inside its cited step's bound and the
hardware's: ``check_bounds`` on the final action against the step it cites, plus the simulated GPU's power range;
not the bounds the proposal carries), source, model answers parsed, verified. ``--llm vllm`` runs the model in a
child process (``bench/agent_eval_vllm.py``): every variant's prompt goes out in one batch (one ``LLM.chat``, each
request decoded under its own answer schema), then ``propose`` runs on those answers; repair prompts go out in a
second batch. ``--llm URL`` asks an OpenAI-compatible server instead, one prompt at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from actors.agent.bounds import check_bounds, cited_template, step_bounds  # noqa: E402
from actors.agent.incidents import Incident, IncidentBook  # noqa: E402
from actors.agent.planner import Knowledge, incident_facts  # noqa: E402
from actors.agent.proposals import Proposal, ProposedAction  # noqa: E402
from actors.agent.propose import check_answer, propose  # noqa: E402
from actors.twin.model import TwinModel  # noqa: E402
from actors.twin.physics import FleetPhysics, Topology  # noqa: E402
from actors.twin.profiles import profile  # noqa: E402
from cluster.telemetry.sim import Fault, Simulator  # noqa: E402
from knowledge.limits import NUMERIC_PARAMS  # noqa: E402
from policies.actions import action_targets, describe  # noqa: E402

SEED_BASE = 20_000
KINDS = ("cooling_degradation", "power_limit", "xid", "link_degradation", "fan_failure", "stuck_sensor",
         "supply_drift", "noisy_sensor")
LOW = frozenset({"notify", "open_ticket"})  # low-risk kinds that may join any remedy
COOLING_FIXES = frozenset({"set_cooling_setpoint", "set_fan_speed", "set_power_limit", "drain_node"})
GPU_FIXES = frozenset({"cordon_gpu", "reset_gpu", "drain_node"})
SECONDS = 600  # simulated seconds a variant may take to raise its first proposal-worthy incident
GPU_MODEL = "H100-SXM"  # the simulator's GPUs report as H100-SXM
OK = {True: "✓", False: "✗"}
SPEC = re.compile(rf"\b(?:{'|'.join(KINDS)})@[\d.]+:[\w/.-]+?(?:=[\d.]+)?(?=[\s\"',)]|$)")


@dataclass(frozen=True)
class Variant:
    """One generated fault scenario and its ground truth."""

    seed: int
    nodes: int
    gpus_per_node: int
    units: int
    setpoint_c: float
    noise_c: float
    fault: str
    cause: tuple[str, str]  # (event kind, subject) the fault should be diagnosed as
    fixes: frozenset[str]  # action kinds that remedy it; empty: only a low-risk report fits
    targets: frozenset[str]  # what an action may touch

    def topology(self) -> Topology:
        topo = Topology.build(self.nodes, self.gpus_per_node, n_units=self.units)
        return topo.with_jobs(self.nodes) if self.fault.startswith("link_") else topo


def generate(n: int, seed_base: int = SEED_BASE) -> list[Variant]:
    """``n`` variants, seeds ``seed_base`` … ``seed_base + n - 1``; the fault kinds in turn."""
    out = []
    for i in range(n):
        seed = seed_base + i
        rng = np.random.default_rng(seed)
        kind = KINDS[i % len(KINDS)]
        nodes, gpn, units = int(rng.integers(2, 5)), int(rng.integers(2, 5)), int(rng.integers(1, 3))
        topo = Topology.build(nodes, gpn, n_units=units)
        at, setpoint = round(float(rng.uniform(20, 60)), 1), float(rng.integers(19, 28))
        gpu = str(rng.choice(topo.gpu_names))
        node = gpu.split("/")[0]
        unit = topo.units[topo.node_unit[topo.nodes.index(node)]]
        served = topo.unit_nodes(unit)
        cooled = frozenset({unit, *served, *(g for g in topo.gpu_names if g.split("/")[0] in served)})
        link = str(rng.choice([name for name, t in topo.links if t == "ib"]))
        cool = ("cooling_degraded", unit)
        truth = {  # fault kind → target, value, root cause, the kinds that remedy it, what actions may touch
            "cooling_degradation": (node, f"={rng.uniform(0.3, 0.48):.2f}", cool, COOLING_FIXES, cooled),
            "fan_failure": (unit, f"={rng.uniform(8, 15):.1f}", cool, COOLING_FIXES, cooled),
            # the unit's supply ends at 40-45 °C, whatever the setpoint
            "supply_drift": (unit, f"={rng.uniform(40, 45) - setpoint:.1f}", cool, COOLING_FIXES, cooled),
            "power_limit": (gpu, f"={rng.uniform(250, 350):.0f}", ("power_capped", gpu), {"set_power_limit"}, {gpu}),
            "link_degradation": (link, f"={rng.uniform(0.1, 0.3):.2f}", ("network_bottleneck", link), {"disable_link"},
                                 {link}),
            "xid": (gpu, f"={rng.choice([48, 74, 79, 94, 95])}", ("xid_error", gpu), GPU_FIXES, {gpu, node}),
            "stuck_sensor": (gpu, "", ("sensor_fault", gpu), set(), {gpu}),
            "noisy_sensor": (gpu, f"={rng.uniform(5, 8):.1f}", ("sensor_fault", gpu), set(), {gpu}),
        }
        target, value, cause, fixes, targets = truth[kind]
        out.append(Variant(seed=seed, nodes=nodes, gpus_per_node=gpn, units=units,
                           setpoint_c=setpoint, noise_c=round(float(rng.uniform(0.3, 0.6)), 2),
                           fault=f"{kind}@{at}:{target}{value}", cause=cause, fixes=frozenset(fixes),
                           targets=frozenset(targets)))
    return out


def used_by_tests(root: Path = ROOT) -> tuple[set[int], set[str]]:
    """Seeds and fault specs the tests use: the scenarios' ``made_with`` lines, and in the test code ``seed=N``,
    ``seed_base=N`` (N to N+9), fault strings and the seed after a fault string in a tuple; and the simulator's
    default seed (7)."""
    seeds, specs = {7}, set()
    for exp in (root / "tests" / "scenarios").glob("*/expected.yaml"):
        made = str(yaml.safe_load(exp.read_text()).get("made_with", ""))
        seeds |= {int(s) for s in re.findall(r"--seed\s+(\d+)", made)}
        specs |= set(re.findall(r"--fault\s+(\S+)", made))
    for py in (root / "tests").rglob("*.py"):
        text = py.read_text(errors="replace")
        seeds |= {int(s) for s in re.findall(r"\bseed\s*=\s*(\d[\d_]*)", text)}
        seeds |= {int(s) + i for s in re.findall(r"\bseed_base\s*=\s*(\d[\d_]*)", text) for i in range(10)}
        seeds |= {int(s) for s in re.findall(rf"[\"']{SPEC.pattern}[\"']\s*,\s*(\d+)", text)}
        specs |= set(SPEC.findall(text))
    return seeds, specs


def assert_held_out(variants: list[Variant], root: Path = ROOT) -> None:
    """Raise ``ValueError`` when a variant's seed or fault spec is one a test uses."""
    seeds, specs = used_by_tests(root)
    clash = [f"seed {v.seed}" for v in variants if v.seed in seeds] + [v.fault for v in variants if v.fault in specs]
    if clash:
        raise ValueError(f"not held out, the tests use: {', '.join(clash)} (choose another --seed-base)")


@dataclass
class Case:
    """A variant run to its first proposal-worthy incident (``None``: the twin raised none)."""

    variant: Variant
    incident: Incident | None
    topology: dict[str, list[str]]
    at_s: float | None


def run_to_incident(v: Variant) -> Case:
    """Simulator → TwinModel → IncidentBook until an incident needs a proposal (or ``SECONDS`` pass)."""
    topo = v.topology()
    sim = Simulator(topo, faults=[Fault.parse(v.fault)], seed=v.seed, noise_c=v.noise_c)
    sim.physics = FleetPhysics(topo, supply_c=v.setpoint_c)  # the same fleet at another setpoint
    twin, book = TwinModel(), IncidentBook()
    for _ in range(SECONDS):
        for ev in twin.ingest(sim.step()):
            inc, needs = book.observe(ev)
            if needs and inc is not None:
                return Case(v, inc.model_copy(deep=True), twin.topology(), sim.t)
    return Case(v, None, twin.topology(), None)


def prompt_key(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> str:
    return hashlib.sha256(json.dumps([messages, schema], sort_keys=True).encode()).hexdigest()


class Answered:
    """A ``Completer`` that answers from ``answers`` (prompt key → the model's answer), computed beforehand in a
    batch, or from ``live``; a prompt with no answer yet is kept in ``missing`` and fails (``propose`` falls back;
    the next batch answers it). ``used`` holds the answers this variant's ``propose`` got, in order."""

    def __init__(self, answers: dict[str, dict[str, Any]], live: Any = None) -> None:
        self.answers, self.live = answers, live
        self.missing: dict[str, dict[str, Any]] = {}
        self.used: list[dict[str, Any]] = []

    async def complete(self, messages: list[dict[str, str]], max_tokens: int,
                       schema: dict[str, Any] | None = None) -> str:
        key = prompt_key(messages, schema)
        if key not in self.answers and self.live is not None:
            t0 = time.perf_counter()
            text = await self.live.complete(messages, max_tokens, schema)
            self.answers[key] = {"text": text, "seconds": round(time.perf_counter() - t0, 1)}
        if key not in self.answers:
            self.missing[key] = {"messages": messages, "schema": schema, "max_tokens": max_tokens}
            raise LookupError("no answer to this prompt yet")
        self.used.append(self.answers[key])
        return self.answers[key]["text"]


async def propose_all(cases: list[Case], kb: Knowledge, worker: Any = None, live: Any = None,
                      answers: dict[str, dict[str, Any]] | None = None,
                      save: Any = None) -> list[tuple[Proposal | None, list[dict[str, Any]]]]:
    """Each case's proposal and the model answers it used. With a ``worker`` (``VllmWorker``): a first pass collects
    every prompt, one batch answers them, the next pass collects the repair prompts, and so on (``propose`` asks
    at most twice); the last pass is the one scored. ``answers`` may hold answers from an earlier run (same seeds,
    same prompts); ``save(answers)`` is called after each batch."""
    answers = {} if answers is None else answers
    asks = worker is not None or live is not None
    for _ in range(3):
        out, missing = [], {}
        for c in cases:
            llm = Answered(answers, live) if asks else None
            p = await propose(c.incident, kb, c.topology, llm) if c.incident is not None else None
            out.append((p, llm.used if llm else []))
            missing.update(llm.missing if llm else {})
        if not missing or worker is None:
            break
        keys = list(missing)
        answers.update(zip(keys, worker.chat([missing[k] for k in keys]), strict=True))
        if save is not None:
            save(answers)
    return out


def numbers_broken(pa: ProposedAction, kb: Knowledge, facts: dict[str, Any]) -> list[str]:
    """Why an action's numbers break its cited step or the hardware (empty: they keep both). Worked out afresh from
    the step the action cites and the incident's facts, not from the bounds the proposal carries."""
    a = pa.action
    params = NUMERIC_PARAMS.get(a.kind, ())
    if not params:
        return []
    template = cited_template(kb, a.kind, pa.citations)
    if template is None:
        return [f"{describe(a)}: no cited step prescribes {a.kind}"]
    bounds, unfollowable = step_bounds(template, facts)
    out = [f"{describe(a)}: the cited step cannot be followed: {w}" for w in unfollowable]
    out += [f"{describe(a)}: the cited step does not bound {p}" for p in params if p not in bounds]
    out += check_bounds(a, bounds, facts)
    hw = profile(GPU_MODEL)  # the GPU the simulator runs, whatever the facts say
    if a.kind == "set_power_limit" and not hw.power_min_w <= a.watts <= hw.tdp_w:
        out.append(f"{describe(a)}: outside the {hw.name}'s {hw.power_min_w:g}-{hw.tdp_w:g} W")
    return out


def parses(text: str) -> bool:
    """Whether a model answer parses as the agent's answer schema (``check_answer``'s own parse)."""
    return check_answer(text, [], set(), {})[0] is not None


def score(c: Case, p: Proposal | None, used: list[dict[str, Any]], kb: Knowledge) -> dict[str, Any]:
    """One variant's row: what was proposed and whether it fits the injected fault."""
    v = c.variant
    row: dict[str, Any] = {
        "seed": v.seed, "fault": v.fault,
        "fleet": f"{v.nodes}x{v.gpus_per_node} GPUs, {v.units} CDU, {v.setpoint_c:g} °C",
        "truth": f"{v.cause[0]} {v.cause[1]}", "incident": None, "at_s": c.at_s, "cause": False, "kinds": False,
        "targets": False, "numbers": True, "broken": [], "source": None, "verified": False, "emergency": False,
        "actions": [], "answers": len(used), "parsed": sum(parses(u["text"]) for u in used),
        "raw": [{k: (x[:1500] if k == "text" else x) for k, x in u.items()} for u in used], "problems": [],
    }
    if p is None or c.incident is None:
        return row
    facts = incident_facts(c.incident)
    kinds = {a.action.kind for a in p.actions}
    touched = {t for a in p.actions for t in action_targets(a.action)}
    broken = [w for a in p.actions for w in numbers_broken(a, kb, facts)]
    rc = (p.root_cause.kind, p.root_cause.subject)
    row.update(incident=" ".join(rc), cause=rc == v.cause,
               kinds=bool(kinds) and kinds <= v.fixes | LOW and (not v.fixes or bool(kinds & v.fixes)),
               targets=touched <= v.targets, numbers=not broken, broken=broken, source=p.source, verified=p.verified,
               emergency=p.emergency, actions=[_short(a.action) for a in p.actions], problems=list(p.problems)[:6])
    return row


def _short(a: Any) -> str:
    """An action by kind, targets and numbers (the words a model wrote are in the JSON's raw answers)."""
    nums = [f"{k}={getattr(a, k):g}" for k in NUMERIC_PARAMS.get(a.kind, ())]
    return f"{a.kind}({', '.join([*action_targets(a), *nums])})"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline: counts over the variants, and the verified proposals that break a bound (must be 0)."""
    count = lambda key: sum(bool(r[key]) for r in rows)  # noqa: E731
    return {"variants": len(rows), "incident": sum(r["incident"] is not None for r in rows), "cause": count("cause"),
            "kinds": count("kinds"), "targets": count("targets"), "numbers": count("numbers"),
            "llm_verified": sum(r["source"] == "llm" and r["verified"] for r in rows),
            "answers": sum(r["answers"] for r in rows), "parsed": sum(r["parsed"] for r in rows),
            "verified_breaking": sum(r["verified"] and not r["numbers"] for r in rows)}


def variant_table(rows: list[dict[str, Any]]) -> str:
    head = ("| seed | fault | fleet | root cause | actions | kinds | targets | numbers | source | parsed | verified |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['seed']} | `{r['fault']}` | {r['fleet']} | {OK[r['cause']]} {r['incident'] or 'none'} | "
        f"{'; '.join(r['actions']) or '-'} | {OK[r['kinds']]} | {OK[r['targets']]} | {OK[r['numbers']]} | "
        f"{r['source'] or '-'} | {r['parsed']}/{r['answers']} | {OK[r['verified']]} |\n" for r in rows)


def headline_table(runs: list[dict[str, Any]]) -> str:
    out = ("| --llm | model | variants | root cause | action kinds | targets | numbers in bounds | source llm & "
           "verified | model answers parsed | verified, breaking a bound |\n" + "|---" * 10 + "|\n")
    for run in runs:
        s, n = run["summary"], run["summary"]["variants"]
        parsed = f"{s['parsed']}/{s['answers']} ({100 * s['parsed'] / s['answers']:.0f} %)" if s["answers"] else "-"
        share = f"{s['llm_verified']}/{n} ({100 * s['llm_verified'] / max(n, 1):.0f} %)"
        out += (f"| {run['llm']} | {run['model']} | {n} | {s['cause']}/{n} | {s['kinds']}/{n} | {s['targets']}/{n} | "
                f"{s['numbers']}/{n} | {share} | {parsed} | {s['verified_breaking']} |\n")
    return out


def resolve_model(model: str, data_dir: Path | None) -> tuple[str, str]:
    """The model folder vLLM loads and its name; ``default`` converts the bundled SmolLM2 once (in a child)."""
    from cluster.model_files import convert_in_subprocess
    from cluster.settings import Settings

    s = Settings(**({"data_dir": data_dir} if data_dir else {}), **({} if model == "default" else {"model": model}))
    return convert_in_subprocess(s, progress=lambda m: print(m, file=sys.stderr))


def evaluate(cases: list[Case], kb: Knowledge, llm: str, model: str, data_dir: Path | None = None,
             api_key: str | None = None, answers_file: Path | None = None) -> dict[str, Any]:
    """One ``--llm`` mode over the cases: the rows, the summary and what the model cost."""
    t0, worker, live = time.perf_counter(), None, None
    if llm == "vllm":
        from bench.agent_eval_vllm import VllmWorker

        path, model = resolve_model(model, data_dir)
        worker = VllmWorker(path, Path(tempfile.gettempdir()) / "agent_eval_vllm.log")  # starts when first asked
    elif llm != "none":
        from cluster.agent_llm import completer_for

        live = completer_for(llm, model=None if model == "default" else model, api_key=api_key)
    store = json.loads(answers_file.read_text()) if answers_file and answers_file.exists() else {}
    answers = store.setdefault(f"{llm} {model}", {})  # by mode and model: one model's answers are not another's
    save = (lambda _: answers_file.write_text(json.dumps(store))) if answers_file else None  # noqa: E731
    try:
        results = asyncio.run(propose_all(cases, kb, worker, live, answers, save))
    finally:
        if worker is not None:
            worker.close()
    rows = []
    for i, (c, (p, used)) in enumerate(zip(cases, results, strict=True)):
        rows.append(score(c, p, used, kb))
        r = rows[-1]
        print(f"[{i + 1}/{len(cases)}] --llm {llm} seed {r['seed']} {r['fault']}: cause {OK[r['cause']]} kinds "
              f"{OK[r['kinds']]} targets {OK[r['targets']]} numbers {OK[r['numbers']]} source {r['source']} "
              f"parsed {r['parsed']}/{r['answers']} verified {OK[r['verified']]}", file=sys.stderr)
    return {"llm": llm, "model": "-" if llm == "none" else model, "summary": summary(rows), "rows": rows,
            "wall_s": round(time.perf_counter() - t0, 1), "model_run": worker.report() if worker else {}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=20, help="how many held-out variants (default 20)")
    ap.add_argument("--seed-base", type=int, default=SEED_BASE, help=f"first held-out seed (default {SEED_BASE})")
    ap.add_argument("--llm", action="append", help="none (the runbook mapping), vllm (a model on vLLM in a child "
                    "process) or an OpenAI-compatible base URL; repeatable, one table row each (default none)")
    ap.add_argument("--model", default="default", help="with vllm: a Hugging Face model folder, or default (the "
                    "bundled SmolLM2-135M-Instruct, converted once into <data-dir>/models); with a URL: the model id")
    ap.add_argument("--data-dir", type=Path, help="opsloop's data directory, where the default model is kept "
                    "(default: the settings' data_dir, .opsloop)")
    ap.add_argument("--api-key", help="with a URL: bearer token")
    ap.add_argument("--json", type=Path, help="write every row, raw model answers included, to this JSON file")
    ap.add_argument("--answers", type=Path, help="model answers by model and prompt: read when it exists, written "
                    "after each batch; a rerun with the same seeds asks the model only what is not in it")
    args = ap.parse_args(argv)
    if args.variants < 1:
        ap.error("--variants must be at least 1")
    from knowledge.retrieval import KnowledgeBase

    variants = generate(args.variants, args.seed_base)
    assert_held_out(variants)
    kb = KnowledgeBase.bundled(dense=False)
    cases = []
    for i, v in enumerate(variants):
        cases.append(run_to_incident(v))
        inc = cases[-1].incident
        print(f"[{i + 1}/{len(variants)}] seed {v.seed} {v.fault} on {v.nodes}x{v.gpus_per_node}, {v.units} CDU → "
              + (f"{inc.root_cause.kind} {inc.root_cause.subject} at {cases[-1].at_s:g} s" if inc else "no incident"),
              file=sys.stderr)
    runs = [evaluate(cases, kb, m, args.model, args.data_dir, args.api_key, args.answers) for m in args.llm or ["none"]]
    for run in runs:
        print(f"\n--llm {run['llm']} ({run['model']}), {run['wall_s']} s\n\n{variant_table(run['rows'])}")
    print(headline_table(runs))
    if args.json:
        machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
        args.json.write_text(json.dumps({"command": sys.argv, "machine": machine, "runs": runs,
                                         "variants": [asdict(v) for v in variants]}, indent=1, default=sorted))
    return 0 if all(r["summary"]["verified_breaking"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
