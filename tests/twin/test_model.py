"""The twin's detectors over the simulator: early warning, hysteresis, recovery, determinism."""

from __future__ import annotations

import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from cluster.telemetry.samples import parse_sample
from cluster.telemetry.sim import Fault, Simulator
from policies.actions import SetCoolingSetpoint


def run(seconds: int, faults: list[Fault], fix_at: int | None = None, seed: int = 7) -> list:
    sim = Simulator(Topology.build(2, 4), faults=faults, seed=seed)
    twin = TwinModel()
    events = []
    for k in range(seconds):
        if fix_at is not None and k == fix_at:
            sim.apply(SetCoolingSetpoint(unit="cu01", supply_c=13.0), "act-1", "ap-1")
        events += twin.ingest(sim.step())
    return events


def test_healthy_fleet_is_quiet() -> None:
    assert run(300, []) == []


def test_cooling_fault_warns_before_the_sensor_crosses_and_recovers_after_the_fix() -> None:
    events = run(600, [Fault.parse("cooling_degradation@20:n01=0.5")], fix_at=250)
    kinds = [(e.kind, e.subject) for e in events]
    assert ("cooling_degraded", "cu01") in kinds
    for g in range(4):
        gpu = f"n01/gpu{g}"
        mine = [e for e in events if e.subject == gpu]
        order = [e.kind for e in mine]
        assert order[0] == "thermal_slowdown_predicted"
        assert order.count("thermal_slowdown_predicted") == 1, "hysteresis: one warning per episode"
        predicted = mine[0]
        overheat = next(e for e in mine if e.kind == "gpu_overheat")
        assert predicted.ts < overheat.ts - 15  # seen well before the lagging sensor crosses
        assert predicted.data["sensed_c"] < predicted.data["max_operating_c"]
        assert order[-1] == "thermal_recovered"
        assert next(e for e in mine if e.kind == "thermal_recovered").ts > 250
    assert not any(e.subject.startswith("n02/") for e in events), "the healthy node stays quiet"
    assert ("action_executed", "cu01") in kinds


def test_event_ids_are_deterministic() -> None:
    a = run(200, [Fault.parse("cooling_degradation@20:n01=0.5")])
    b = run(200, [Fault.parse("cooling_degradation@20:n01=0.5")])
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    assert len({e.event_id for e in a}) == len(a)


def test_bad_fault_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="KIND@SECONDS:TARGET"):
        Fault.parse("cooling_degradation-n01")
    with pytest.raises(ValueError, match="unknown target"):
        Simulator(Topology.build(1, 1), faults=[Fault.parse("cooling_degradation@5:n09")])


@pytest.mark.parametrize(
    "record",
    [
        {"ts": 1, "node": "n01", "gpu": 0, "temp_c": float("nan")},
        {"ts": 1, "node": "n01", "gpu": 0, "temp_c": 400},
        {"ts": 1, "node": "n01", "gpu": 0},
        {"ts": 1, "node": "n01", "gpu": "zero", "temp_c": 50},
        {"ts": -5, "node": "n01", "gpu": 0, "temp_c": 50},
        {"kind": "teleport", "ts": 1},
    ],
)
def test_malformed_samples_are_refused(record: dict) -> None:
    with pytest.raises(ValueError):
        parse_sample(record)


def test_sample_kind_defaults_to_gpu() -> None:
    s = parse_sample({"ts": 1, "node": "n01", "gpu": 3, "temp_c": 55.5})
    assert s.kind == "gpu" and s.name == "n01/gpu3"
