"""Shards and the barrier in-process; network, straggler, XID and sensor-fault detectors over the simulator."""

from __future__ import annotations

import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from actors.twin.shards import ShardedTwin, partition
from cluster.telemetry.sim import Fault, Simulator


def test_partition_by_node_and_rack() -> None:
    nodes = [f"n{i:02d}" for i in range(1, 7)]
    assert partition(nodes, 3) == {"s01": ["n01", "n02"], "s02": ["n03", "n04"], "s03": ["n05", "n06"]}
    racks = partition(nodes, 2, by="rack", node_unit={n: f"cu{i % 2}" for i, n in enumerate(nodes)})
    assert racks == {"s01": ["n01", "n03", "n05"], "s02": ["n02", "n04", "n06"]}
    with pytest.raises(ValueError):
        partition(nodes, 7)


def _run(twin, faults: list[str], seconds: int = 200, nodes: int = 2) -> list:  # noqa: ANN001
    sim = Simulator(Topology.build(nodes, 4).with_jobs(2), [Fault.parse(f) for f in faults], seed=3)
    return [e for _ in range(seconds) for e in twin.ingest(sim.step())]


def test_sharded_twin_matches_one_twin_and_measures_the_barrier() -> None:
    faults = ["cooling_degradation@20:n01=0.5", "link_degradation@80:n01-n02/ib0=0.3"]
    sharded = ShardedTwin(partition(["n01", "n02"], 2))
    a = _run(sharded, faults)
    b = _run(TwinModel(), faults)
    key = lambda evs: sorted((e.kind, e.subject, e.ts) for e in evs)  # noqa: E731
    assert key(a) == key(b)
    summary = sharded.snapshot()["barrier"]
    assert summary["ticks"] == 200 and summary["shards"] == 2
    assert summary["mean_wait_ms"] >= 0 and 0 < summary["efficiency"] <= 1.0
    assert summary["slowest_shard"] in ("s01", "s02")
    assert len(sharded.snapshot()["gpus"]) == 8


def test_degraded_link_names_the_link_jobs_and_cost() -> None:
    events = _run(TwinModel(), ["link_degradation@30:n01-n02/ib0=0.25"], seconds=80)
    nb = [e for e in events if e.kind == "network_bottleneck"]
    assert len(nb) == 1 and nb[0].subject == "n01-n02/ib0"
    assert nb[0].data["jobs"] == ["job01"] and nb[0].data["cost_pct"] > 20
    st = [e for e in events if e.kind == "straggler"]
    assert st and st[0].data["culprit"] == "n01-n02/ib0" and st[0].data["culprit_kind"] == "link"


def test_power_limit_cap_clock_drop_and_straggler_gpu() -> None:
    events = _run(TwinModel(), ["power_limit@20:n02/gpu1=300"], seconds=120)
    kinds = [(e.kind, e.subject) for e in events]
    assert ("power_capped", "n02/gpu1") in kinds
    drop = next(e for e in events if e.kind == "clock_drop")
    assert drop.subject == "n02/gpu1" and drop.data["reason"] == "power"
    st = next(e for e in events if e.kind == "straggler")
    assert st.data["culprit"] == "n02/gpu1" and st.data["cost_pct"] > 5


def test_xid_and_sensor_faults() -> None:
    events = _run(TwinModel(), ["xid@10:n01/gpu2=48", "noisy_sensor@20:n02/gpu0=6", "stuck_sensor@20:n02/gpu3"],
                  seconds=100)
    xid = next(e for e in events if e.kind == "xid_error")
    assert xid.subject == "n01/gpu2" and xid.data["xid"] == 48 and xid.data["resolution"] == "WORKFLOW_XID_48"
    faults = {e.subject: e.data["fault"] for e in events if e.kind == "sensor_fault"}
    assert faults == {"n02/gpu0": "noisy", "n02/gpu3": "stuck"}


def test_energy_is_accounted() -> None:
    twin = TwinModel()
    _run(twin, [], seconds=30)
    energy = twin.snapshot()["energy"]
    assert energy["total_j"] > 0 and set(energy["nodes_j"]) == {"n01", "n02"} and energy["jobs_j"]["job01"] > 0
