"""A cooling root cause backed by measurement: the incident cites how its unit's supply led its GPUs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.agent.incidents import MEASURED, IncidentBook, group_key, lead_sentence
from actors.twin.events import Event
from actors.twin.model import TwinModel
from cluster.cli.incident import replay
from cluster.telemetry.quality import Validator
from cluster.telemetry.replay import read_batches

SCENARIOS = Path(__file__).parents[1] / "scenarios"


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
    assert f"{MEASURED}cu01's supply temperature leads the temperatures of 8 of its GPUs by " in why, why
    assert "(r ≥ 0.9" in why


def test_cooling_loss_facts_hold_the_lead_summary() -> None:
    book, _ = book_after("cooling_loss")
    inc = book.open["unit:cu01"]
    lead = inc.facts["lead"]
    assert lead["series"] == "cu01.supply_c" and lead["gpus"] == 8
    assert 0 < lead["lag_s_min"] <= lead["lag_s_max"] <= 60 and lead["r_min"] >= 0.9
    assert set(inc.leads) == {f"n0{n}/gpu{g}" for n in (1, 2) for g in range(4)}
    assert inc.root_cause.why.count(MEASURED) == 1, "the measured part is rewritten, not appended again"
    again = IncidentBook()
    again.load(book.dump())
    assert again.open["unit:cu01"].leads == inc.leads


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
                                       "GPUs by 12 s (r ≥ 0.93)")


def test_lead_sentence_wording() -> None:
    s = {"series": "cu01.supply_c", "gpus": 4, "lag_s_min": 10.0, "lag_s_max": 14.0, "r_min": 0.914}
    assert lead_sentence(s) == "cu01's supply temperature leads the temperatures of 4 of its GPUs by 10–14 s (r ≥ 0.91)"
