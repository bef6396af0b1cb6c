"""A cooling unit whose supply drifts well above its own normal is cooling_degraded, with no setpoint and no flow
(actors/twin/cooling.py), and the incident its GPUs' heat opens is rooted at the unit (actors/agent/incidents.py)."""

from __future__ import annotations

import numpy as np

from actors.agent.incidents import IncidentBook
from actors.twin.cooling import DRIFT_HOLD_S, CoolingWatch
from actors.twin.model import Thresholds, TwinModel
from actors.twin.physics import Topology
from cluster.telemetry.samples import CoolingSample
from cluster.telemetry.sim import Fault, Simulator


def crah(ts: float, supply_c: float) -> CoolingSample:
    """A CRAH that reports its supply air and nothing else."""
    return CoolingSample(kind="cooling", ts=ts, unit="crah1", supply_c=supply_c)


def feed(supplies: list[float]) -> list:
    watch, th = CoolingWatch(), Thresholds()
    return [(t, e) for t, c in enumerate(supplies) for e in watch.ingest(crah(float(t), c), th)]


def test_supply_air_climbing_from_18_to_31_is_cooling_degraded() -> None:
    rng = np.random.default_rng(5)
    calm = 18.0 + rng.normal(0, 0.3, 900)  # fifteen minutes of its normal
    climb = np.linspace(18.0, 31.0, 600) + rng.normal(0, 0.3, 600)  # ten minutes of drift
    supplies = [round(float(x), 1) for x in np.concatenate([calm, climb, np.full(300, 31.0)])]
    events = feed(supplies)
    assert [e.kind for _, e in events] == ["cooling_degraded"]
    t, ev = events[0]
    assert ev.subject == "crah1" and abs(ev.data["normal_c"] - 18.0) < 0.3
    assert ev.data["setpoint_c"] is None, "no setpoint was reported, none is made up"
    first_above = next(k for k, c in enumerate(supplies) if c > ev.data["normal_c"] + Thresholds().supply_excess_c)
    assert t >= first_above + DRIFT_HOLD_S, "a transient above the margin is not a drift"
    assert supplies[t] < 25.0, "flagged while it climbs, not once it has arrived"


def test_the_drift_recovers_when_the_supply_comes_back() -> None:
    supplies = [18.0] * 900 + [26.0] * 200 + [18.5] * 60
    assert [e.kind for _, e in feed(supplies)] == ["cooling_degraded", "cooling_recovered"]


def test_normal_noise_and_whole_degree_readings_are_not_a_drift() -> None:
    rng = np.random.default_rng(6)
    wander = 18.0 + 1.0 * np.sin(np.arange(7200) / 600.0)  # a slow ±1 °C swing over the day's load
    supplies = [float(round(x)) for x in wander + rng.normal(0, 0.8, 7200)]
    assert feed(supplies) == []


def test_a_reported_setpoint_change_is_a_new_normal_not_a_drift() -> None:
    watch, th = CoolingWatch(), Thresholds()
    events = []
    for t in range(1800):
        setpoint = 18.0 if t < 900 else 24.0
        s = CoolingSample(kind="cooling", ts=float(t), unit="cu01", supply_c=setpoint, setpoint_c=setpoint)
        events += watch.ingest(s, th)
    assert events == []


def test_the_drift_survives_a_checkpoint() -> None:
    watch, th = CoolingWatch(), Thresholds()
    for t in range(900):
        watch.ingest(crah(float(t), 18.0), th)
    again = CoolingWatch.from_state(watch.to_state())
    events = [e for t in range(900, 1100) for e in again.ingest(crah(float(t), 25.0), th)]
    assert [e.kind for e in events] == ["cooling_degraded"]


def test_the_incident_of_a_drifting_unit_is_rooted_at_the_unit() -> None:
    """The simulated unit loses 14 K of capacity after ten minutes; its samples are stripped to the supply (and the
    nodes it serves), as a CRAH that reports no setpoint and no flow sends them. The GPUs' heat is the unit's."""
    sim = Simulator(Topology.build(2, 4), faults=[Fault.parse("supply_drift@600:cu01=14")], seed=21)
    twin, book = TwinModel(), IncidentBook()
    for _ in range(900):
        samples = [s.model_copy(update={"setpoint_c": None, "flow_frac": None, "fan_pct": None, "return_c": None})
                   if isinstance(s, CoolingSample) else s for s in sim.step()]
        for e in twin.ingest(samples):
            book.observe(e)
    acting = [i for i in book.open.values() if i.hot]
    assert len(acting) == 1, [(i.root_cause.kind, i.root_cause.subject) for i in acting]
    inc = acting[0]
    assert (inc.root_cause.kind, inc.root_cause.subject) == ("cooling_degraded", "cu01")
    assert "above its normal" in inc.root_cause.why
    assert "setpoint_c" not in inc.facts
