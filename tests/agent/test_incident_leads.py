"""A cooling root cause backed by measurement: the incident cites how its unit's supply led its GPUs.

The recorded ``cooling_loss`` unit trips and restarts every 40 s, so its supply swings and the GPUs' temperatures
follow: a lead the twin certifies (p < ``ALPHA`` after the lags tried). A supply that drifts beside GPUs heating for
a reason of their own leads nothing, on the same path (simulator → twin → incidents; seeds 17067–17068, used by no
other test).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from actors.agent.incidents import MEASURED, IncidentBook, group_key, lead_sentence
from actors.twin.events import Event
from actors.twin.history import ALPHA
from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from cluster.cli.incident import replay
from cluster.telemetry.quality import Validator
from cluster.telemetry.replay import read_batches
from cluster.telemetry.sim import Fault, Simulator

SCENARIOS = Path(__file__).parents[1] / "scenarios"
GPUS = {f"n0{n}/gpu{g}" for n in (1, 2) for g in range(4)}
#: Of the 8 GPUs, how many must carry a certified lead: each GPU's window is tested on its own at p < 0.01 after
#: up to 60 lags, which a real lead passes most of the time, not always (on the recording 7 of 8 do; n02/gpu0's
#: best is p = 0.013).
MOST = 6


def book_after(name: str) -> tuple[IncidentBook, list]:
    twin, book = TwinModel(), IncidentBook()
    touched = []
    for batch, _ in read_batches(SCENARIOS / name / "trace.jsonl", Validator()):
        for ev in twin.ingest(batch):
            inc, _ = book.observe(ev)
            if inc is not None and inc not in touched:
                touched.append(inc)
    return book, touched


def test_cooling_loss_explanation_cites_the_measured_lead() -> None:
    incidents = asyncio.run(replay(SCENARIOS / "cooling_loss" / "trace.jsonl", None, 15.0, []))
    acting = [i for i in incidents if i["proposals"]]
    assert len(acting) == 1
    why = acting[0]["root_cause"]["why"]
    assert acting[0]["root_cause"]["kind"] == "cooling_degraded"
    assert "cannot hold its supply temperature" in why
    said = re.search(f"{re.escape(MEASURED)}cu01's supply temperature leads the temperatures of (\\d) of its GPUs "
                     r"by (\d+)(?:–(\d+))? s \(their changes: r ≥ (0\.\d\d), p ≤ (0\.\d\d\d)\)$", why)
    assert said, why
    gpus, lo, hi, r = int(said[1]), int(said[2]), int(said[3] or said[2]), float(said[4])
    assert MOST <= gpus <= 8 and 10 <= lo <= hi <= 45  # the die's and the sensor's lags, not a coincidence's 0 or 60
    assert r > 0  # r of the (smoothed) changes; what certifies the lead is each GPU's p, checked below
    assert float(said[5]) <= ALPHA


def test_cooling_loss_facts_hold_the_lead_summary() -> None:
    book, _ = book_after("cooling_loss")
    inc = book.open["unit:cu01"]
    lead = inc.facts["lead"]
    assert lead["series"] == "cu01.supply_c" and MOST <= lead["gpus"] == len(inc.leads)
    assert 10 <= lead["lag_s_min"] <= lead["lag_s_max"] <= 45 and 0 < lead["r_min"] <= 1
    assert set(inc.leads) <= GPUS
    for gpu, kept in inc.leads.items():  # every cited lead is one the twin certified
        assert kept["series"] == "cu01.supply_c" and 0.0 <= kept["p"] <= ALPHA, (gpu, kept)  # events keep 3 decimals
        assert 3 < kept["n_eff"] <= kept["n"], (gpu, kept)
    assert inc.root_cause.why.count(MEASURED) == 1, "the measured part is rewritten, not appended again"
    again = IncidentBook()
    again.load(book.dump())
    assert again.open["unit:cu01"].leads == inc.leads


@pytest.mark.parametrize("seed", [17067, 17068])
def test_an_unrelated_supply_drift_backs_no_incident(seed: int) -> None:
    """+2 °C on cu01's supply at 30 s, coolant flow to n01 halved at 43 s: n01's GPUs heat for their own reason,
    13 s after the supply started to rise (on levels that "led" them with r ≥ 0.9). The incident they open is
    explained by topology, never by a measured lead."""
    sim = Simulator(Topology.build(2, 4), [Fault.parse("supply_drift@30:cu01=2"),
                                           Fault.parse("cooling_degradation@43:n01=0.5")], seed=seed, noise_c=0.5)
    twin, book = TwinModel(), IncidentBook()
    thermal = 0
    for _ in range(150):
        for ev in twin.ingest(sim.step()):
            thermal += ev.kind in ("thermal_slowdown_predicted", "thermal_slowdown", "gpu_overheat")
            book.observe(ev)
    assert thermal >= 4, "n01's GPUs heat"
    for inc in book.open.values():
        assert not inc.leads and "lead" not in inc.facts and MEASURED not in inc.root_cause.why, inc.root_cause


def test_no_lead_backed_incident_without_a_moving_supply() -> None:
    for name in ("benign_noise", "coolant_flow"):
        _, touched = book_after(name)
        assert not any(MEASURED in i.root_cause.why or "lead" in i.facts for i in touched), name
    _, benign = book_after("benign_noise")
    assert not any(i.hot for i in benign)


def test_a_measured_lead_groups_a_gpu_under_its_unit() -> None:
    lead = {"series": "cu07.supply_c", "lag_s": 12.0, "r": 0.93, "n": 90}
    ev = Event.make("thermal_slowdown_predicted", "n09/gpu1", 50.0, "warning",
                    {"gpu": "n09/gpu1", "node": "n09", "unit": None, "projected_c": 90.0, "lead": lead})
    assert group_key(ev) == "unit:cu07"
    book = IncidentBook()
    cool = Event.make("cooling_degraded", "cu07", 40.0, "warning",
                      {"unit": "cu07", "node": "n09", "flow_frac": 1.0, "supply_c": 31.0, "setpoint_c": 25.0,
                       "fan_pct": 70.0, "nodes": ["n09"]})
    book.observe(cool)
    inc, needs = book.observe(ev)
    assert inc is not None and needs and inc.key == "unit:cu07"
    assert book.node_unit["n09"] == "cu07"
    assert inc.root_cause.why.endswith(f"{MEASURED}cu07's supply temperature leads the temperature of one of its "
                                       "GPUs by 12 s (their changes: r ≥ 0.93)")


def test_lead_sentence_wording() -> None:
    s = {"series": "cu01.supply_c", "gpus": 4, "lag_s_min": 10.0, "lag_s_max": 14.0, "r_min": 0.414, "p_max": 0.0042}
    assert lead_sentence(s) == ("cu01's supply temperature leads the temperatures of 4 of its GPUs by 10–14 s "
                                "(their changes: r ≥ 0.41, p ≤ 0.005)")  # p rounded up
