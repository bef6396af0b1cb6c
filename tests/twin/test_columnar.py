"""The twin folds GPU readings as columns: a list of samples and the same readings as columns give the same events."""

from __future__ import annotations

import numpy as np
import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import THROTTLE_REASONS, FleetPhysics, Topology
from cluster.telemetry.samples import GpuColumns, GpuRoster, GpuSample
from cluster.telemetry.sim import Fault, Simulator

#: A fixed vocabulary (every subset of the physics' reasons), unlike from_samples' per-round one.
SETS = tuple(tuple(r for b, r in enumerate(THROTTLE_REASONS) if c >> b & 1) for c in range(1 << len(THROTTLE_REASONS)))


def as_columns(roster: GpuRoster, gpu: list[GpuSample]) -> GpuColumns:
    """The readings of one tick as columns over a roster kept across ticks (what a fleet source builds)."""
    by_name = {s.name: s for s in gpu}
    rows = [by_name[g] for g in roster.names]
    f = lambda attr: np.array([np.nan if getattr(s, attr) is None else getattr(s, attr) for s in rows])  # noqa: E731
    i = lambda attr: np.array([-1 if getattr(s, attr) is None else getattr(s, attr) for s in rows])  # noqa: E731
    code = np.array([SETS.index(s.throttle_reasons) for s in rows])
    return GpuColumns(roster, f("ts"), f("temp_c"), f("power_w"), f("power_limit_w"), f("sm_clock_mhz"), code,
                      i("xid"), i("xid_total"), SETS)


def hot_fleet() -> Simulator:
    """Seeded, with jobs, GPUs driven over slowdown (flow and fans cut), a power cap, an XID and sensor faults."""
    faults = [Fault.parse(f) for f in ("cooling_degradation@5:n02=0.35", "fan_failure@20:cu01=15",
                                       "power_limit@8:n01/gpu3=300", "xid@12:n03/gpu1=79",
                                       "stuck_sensor@10:n04/gpu2", "noisy_sensor@15:n03/gpu6=6",
                                       "link_degradation@25:n01-n02/ib0=0.3")]
    return Simulator(Topology.build(4, 8, n_units=2).with_jobs(2), faults, seed=11)


def test_a_list_of_samples_and_the_same_readings_as_columns_give_the_same_events() -> None:
    by_list, by_cols = TwinModel(), TwinModel()
    sim = hot_fleet()
    roster = GpuRoster(tuple(n for n in sim.topo.nodes for _ in range(8)), tuple(range(8)) * 4, ("H100-SXM",) * 32)
    a, b = [], []
    for _ in range(240):
        samples = sim.step()
        gpu = [s for s in samples if isinstance(s, GpuSample)]
        a += by_list.ingest(samples)
        b += by_cols.ingest([as_columns(roster, gpu), *[s for s in samples if not isinstance(s, GpuSample)]])
    kinds = {e.kind for e in a}
    # the detectors really fired: thermal, clock, power, XID, sensor and job events
    assert {"thermal_slowdown_predicted", "thermal_slowdown", "clock_drop", "power_capped", "xid_error",
            "sensor_fault", "straggler"} <= kinds
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    assert by_list.snapshot() == by_cols.snapshot() and by_list.to_state() == by_cols.to_state()


def test_missing_readings_in_columns_are_missing_not_zero() -> None:
    roster = GpuRoster(("n01", "n01"), (0, 1), ("H100-SXM", "Z9-unknown"))
    twin = TwinModel()
    cols = GpuColumns(roster, np.array([1.0, 1.0]), np.array([60.0, np.nan]), np.array([np.nan, 300.0]),
                      np.array([np.nan, np.nan]), np.array([1900.0, np.nan]), np.array([0, 1]), np.array([-1, 79]),
                      np.array([-1, -1]), ((), ("sw_power_cap",)))
    events = twin.ingest([cols])
    assert [e.kind for e in events] == ["gpu_model_unknown", "power_capped", "xid_error"]
    assert events[1].data["power_limit_w"] is None and events[1].data["reasons"] == ["sw_power_cap"]
    g0, g1 = twin.snapshot()["gpus"]
    assert g0["power_w"] is None and g1["sensed_c"] is None and g1["est_c"] is None
    assert g1["throttle_reasons"] == ["sw_power_cap"] and g0["throttle_reasons"] == []
    # the same readings as samples: the same events
    samples = [GpuSample(ts=1.0, node="n01", gpu=0, temp_c=60.0, sm_clock_mhz=1900.0),
               GpuSample(ts=1.0, node="n01", gpu=1, model="Z9-unknown", power_w=300.0,
                         throttle_reasons=("sw_power_cap",), xid=79)]
    assert [e.to_json() for e in TwinModel().ingest(samples)] == [e.to_json() for e in events]


def test_one_roster_is_resolved_once_and_new_gpus_are_registered_together() -> None:
    p = FleetPhysics(Topology.build(2, 4))
    roster = GpuRoster(("n01",) * 4 + ("n02",) * 4, tuple(range(4)) * 2, ("H100-SXM",) * 8)
    n = len(roster)
    twin = TwinModel()
    for t in (1.0, 2.0):
        twin.ingest([GpuColumns(roster, np.full(n, t), p.sensed_c.copy(), p.power_w.copy(), p.power_limit_w.copy(),
                                p.clock_mhz.copy(), np.zeros(n, int), np.full(n, -1), np.full(n, -1))])
    assert twin.names == list(roster.names) and twin._roster is not None and twin._roster[0] is roster
    assert len(twin.est.t) == len(twin.signals.clock_ref) == len(twin.latest) == n and twin.samples_seen == 2 * n


@pytest.mark.parametrize(("change", "message"), [
    ({"temp_c": np.array([200.0])}, "temp_c outside"),
    ({"ts": np.array([np.nan])}, "ts must be finite"),
    ({"power_w": np.array([1.0, 2.0])}, "power_w must be an array of 1 rows"),
    ({"reasons": np.array([3])}, "reason codes"),
    ({"xid": np.array([-5])}, "xid and xid_total"),
    ({"reasons": np.array([0.0])}, "reasons must be integers"),
])
def test_bad_columns_are_refused_with_the_reason(change: dict, message: str) -> None:
    base = {"ts": np.array([1.0]), "temp_c": np.array([50.0]), "power_w": np.array([100.0]),
            "power_limit_w": np.array([700.0]), "sm_clock_mhz": np.array([1900.0]), "reasons": np.array([0]),
            "xid": np.array([-1]), "xid_total": np.array([-1])}
    roster = GpuRoster(("n01",), (0,), ("H100-SXM",))
    with pytest.raises(ValueError, match=message):
        GpuColumns(roster, **{**base, **change})


def test_a_roster_naming_a_gpu_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        GpuRoster(("n01", "n01"), (0, 0), ("H100-SXM", "H100-SXM"))


def test_an_empty_batch_of_columns_is_nothing() -> None:
    empty = np.zeros(0)
    cols = GpuColumns(GpuRoster((), (), ()), empty, empty, empty, empty, empty, np.zeros(0, int), np.zeros(0, int),
                      np.zeros(0, int))
    twin = TwinModel()
    assert twin.ingest([cols]) == [] and twin.names == [] and twin.samples_seen == 0
