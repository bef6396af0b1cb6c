"""Recorded scenarios through the twin and the agent (`--llm none`): the right root cause, the right
action kinds, citations of the right runbooks; and variants generated here that nobody tuned to."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from actors.twin.physics import Topology
from cluster.cli.incident import replay
from cluster.telemetry.sim import Fault, Simulator

SCENARIOS = sorted(p for p in (Path(__file__).parents[1] / "scenarios").iterdir() if (p / "trace.jsonl").exists())


def check(incidents: list[dict], expected: dict, subject: str | None = None) -> None:
    acting = [i for i in incidents if i["proposals"]]
    if expected["root_cause"] is None:
        assert acting == [], [i["root_cause"] for i in acting]
        return
    assert len(acting) == 1, [i["root_cause"] for i in acting]
    inc = acting[0]
    want = {**expected["root_cause"], **({"subject": subject} if subject else {})}
    assert {k: inc["root_cause"][k] for k in ("kind", "subject")} == want
    assert sorted(p["action"]["kind"] for p in inc["proposals"]) == sorted(expected["action_kinds"])
    assert all(p["verified"] and p["source"] == "fallback" for p in inc["proposals"])
    cited = {c["doc_id"] for p in inc["proposals"] for c in p["citations"]}
    assert cited and cited <= set(expected["runbooks"]), cited


@pytest.mark.parametrize("folder", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_recorded_scenario(folder: Path) -> None:
    expected = yaml.safe_load((folder / "expected.yaml").read_text())
    check(asyncio.run(replay(folder / "trace.jsonl", None, 15.0, [])), expected)


def write_trace(path: Path, sim: Simulator, seconds: int) -> Path:
    with path.open("w") as fh:
        for _ in range(seconds):
            for s in sim.step():
                fh.write(json.dumps(s.model_dump(mode="json", exclude_none=True)) + "\n")
    return path


VARIANTS = [
    # (name, nodes, jobs, fault, seed, expected scenario, expected subject)
    ("flow-n03", 3, 0, "cooling_degradation@45:n03=0.45", 101, "coolant_flow", "cu01"),
    ("capacity", 3, 0, "supply_drift@35:cu01=18", 202, "cooling_loss", "cu01"),
    ("xid-n02", 3, 0, "xid@50:n02/gpu1=79", 303, "xid79", "n02/gpu1"),
    ("link-n02n03", 3, 3, "link_degradation@40:n02-n03/ib0=0.15", 404, "link_degradation", "n02-n03/ib0"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variants_nobody_tuned_to(variant: tuple, tmp_path: Path) -> None:
    name, nodes, job_nodes, fault, seed, scenario, subject = variant
    topo = Topology.build(nodes, 4)
    if job_nodes:
        topo = topo.with_jobs(job_nodes)
    sim = Simulator(topo, faults=[Fault.parse(fault)], seed=seed, noise_c=0.5)
    trace = write_trace(tmp_path / f"{name}.jsonl", sim, 200)
    expected = yaml.safe_load((Path(__file__).parents[1] / "scenarios" / scenario / "expected.yaml").read_text())
    check(asyncio.run(replay(trace, None, 15.0, [])), expected, subject=subject)
