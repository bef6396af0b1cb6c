"""Energy in the sharded twin: the same joules per GPU, node and job as one twin over the whole fleet."""

from __future__ import annotations

import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from actors.twin.shards import ShardedTwin, partition
from cluster.telemetry.sim import Fault, Simulator


def _feed(twin, seconds: int = 60) -> None:  # noqa: ANN001
    # Two jobs over 3 nodes: job01 spans the shards of n01 and n02; a power cap makes throttling lose energy.
    sim = Simulator(Topology.build(3, 4).with_jobs(2), [Fault.parse("power_limit@10:n02/gpu1=300")], seed=5)
    for _ in range(seconds):
        twin.ingest(sim.step())


def test_sharded_energy_equals_one_twins() -> None:
    one, sharded = TwinModel(), ShardedTwin(partition(["n01", "n02", "n03"], 3))
    _feed(one)
    _feed(sharded)
    want, got = one.snapshot()["energy"], sharded.snapshot()["energy"]
    assert want["jobs_j"] and set(got["jobs_j"]) == set(want["jobs_j"])
    for job, joules in want["jobs_j"].items():
        assert got["jobs_j"][job] == pytest.approx(joules, rel=1e-6, abs=0.5)
    assert got["nodes_j"] == pytest.approx(want["nodes_j"], rel=1e-6, abs=0.5)
    assert got["total_j"] == pytest.approx(want["total_j"], rel=1e-6)
    assert got["throttle_lost_share"] == pytest.approx(want["throttle_lost_share"], abs=1e-3)
    assert got["throttle_lost_share"] > 0
