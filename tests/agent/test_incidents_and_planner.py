"""Incident grouping and the deterministic planner, on twin events from the simulator and the real corpus."""

from __future__ import annotations

import pytest

from actors.agent.incidents import IncidentBook
from actors.agent.planner import bind, incident_facts, plan
from actors.twin.events import Event
from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from cluster.telemetry.sim import Fault, Simulator
from knowledge.documents import ActionTemplate
from knowledge.retrieval import KnowledgeBase

TOPOLOGY = {"gpu": [f"n0{n}/gpu{g}" for n in (1, 2) for g in range(4)], "unit": ["cu01"], "node": ["n01", "n02"]}


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.bundled(dense=False)


def fault_events(seconds: int = 120) -> list[Event]:
    sim = Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@20:n01=0.5")])
    twin = TwinModel()
    return [e for _ in range(seconds) for e in twin.ingest(sim.step())]


def test_cooling_fault_is_one_incident_with_the_unit_as_root_cause() -> None:
    book = IncidentBook()
    needs = [book.observe(e) for e in fault_events()]
    incidents = {inc.incident_id for inc, _ in needs if inc}
    assert len(incidents) == 1
    assert sum(n for _, n in needs) == 1, "one proposal per incident revision"
    inc = next(iter(book.open.values()))
    assert (inc.root_cause.kind, inc.root_cause.subject) == ("cooling_degraded", "cu01")
    assert "n01" in inc.root_cause.why
    assert set(inc.hot) == {f"n01/gpu{g}" for g in range(4)}


def test_redelivered_events_change_nothing() -> None:
    events = fault_events()
    book = IncidentBook()
    for e in events:
        book.observe(e)
    before = book.dump()
    assert all(book.observe(e)[1] is False for e in events)
    assert book.dump() == before
    again = IncidentBook()
    again.load(before)
    assert again.dump() == before


def test_plan_cites_the_cooling_eop_and_binds_the_unit(kb: KnowledgeBase) -> None:
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    p = plan(inc, kb, TOPOLOGY)
    assert p.verified and p.source == "fallback"
    first = p.actions[0]
    assert first.action.kind == "set_cooling_setpoint" and first.action.unit == "cu01"
    assert first.action.supply_c < inc.facts["setpoint_c"]
    assert first.citations[0].doc_id == "eop-cooling-degradation" and first.citations[0].step_id
    assert plan(inc, kb, TOPOLOGY) == p, "deterministic: same incident, same proposal and ids"


def test_plan_never_targets_what_is_not_in_the_fleet(kb: KnowledgeBase) -> None:
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    p = plan(inc, kb, {"gpu": [], "unit": ["cu99"], "node": []})
    assert all(a.action.kind in ("notify", "open_ticket") for a in p.actions)


def test_bind_fills_placeholders_and_reports_missing_facts() -> None:
    params = {"unit": "{unit}", "message": "{summary} now"}
    t = ActionTemplate(kind="notify", step="s3", params=params)
    assert bind(t, {"unit": "cu01", "summary": "hot"}) == {"kind": "notify", "unit": "cu01", "message": "hot now"}
    assert bind(t, {"unit": "cu01"}) is None


def test_the_setpoint_obeys_the_step_it_cites(kb: KnowledgeBase) -> None:
    """eop-cooling-degradation#s3: lower by 2–4 °C, never below 18 °C. The planner proposes the step's own value
    from the live setpoint, and carries the bound for the approval card."""
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    setpoint = inc.facts["setpoint_c"]
    first = plan(inc, kb, TOPOLOGY).actions[0]
    assert (first.citations[0].doc_id, first.citations[0].step_id) == ("eop-cooling-degradation", "s3")
    assert setpoint - 4 <= first.action.supply_c <= setpoint - 2 and first.action.supply_c >= 18
    bound = first.bounds["supply_c"]
    assert (bound.lo, bound.hi) == (max(18.0, setpoint - 4), setpoint - 2)
    assert "never below 18 °C" in bound.text and "below the current" in bound.text


def test_a_step_that_cannot_be_followed_is_not_proposed(kb: KnowledgeBase) -> None:
    """At 19 °C, lowering by 2–4 °C would break the 18 °C floor: the setpoint step is skipped, and the next step
    of the runbook (cap power, 450–500 W on an H100) is proposed instead."""
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    inc.facts["setpoint_c"] = 19.0
    p = plan(inc, kb, TOPOLOGY)
    assert p.verified
    assert all(a.action.kind != "set_cooling_setpoint" for a in p.actions)
    assert any("supply_c: nothing satisfies it" in why for why in p.problems)
    cap = next(a for a in p.actions if a.action.kind == "set_power_limit")
    assert 450 <= cap.action.watts <= 500 and cap.citations[0].step_id == "s4"


def test_proposal_carries_a_what_if_from_the_twin_physics(kb: KnowledgeBase) -> None:
    """The what-if runs the twin's physics forward with the step's own value, and says so when the step alone
    cannot offset the fault (2–4 °C colder supply against half the coolant flow): its checkable claim is then the
    weaker one, short of slowdown. The model-based warning comes while the sensor still reads under 84 °C on its way
    up, so this also checks that a sensor not yet over the line is not taken as "back under" it."""
    from actors.agent.whatif import predict

    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    first = plan(inc, kb, TOPOLOGY).actions[0]
    wi = first.prediction
    assert wi is not None and wi.subject == "n01" and wi == predict(first.action, incident_facts(inc))
    assert wi.checkable and wi.metric == "max_est_c" and wi.below == inc.facts["slowdown_c"] - 0.5
    assert "short of slowdown (without it they reach" in wi.text and "but not under 84 °C sensed" in wi.text


def test_what_if_says_when_an_action_is_not_enough() -> None:
    from actors.agent.whatif import predict
    from policies.actions import parse_action

    facts = {"setpoint_c": 25.0, "supply_c": 25.0, "power_w": 700.0, "max_operating_c": 87.0, "node": "n01",
             "flow_frac": 0.5, "est_c": 89.0, "sensed_c": 87.5}
    weak = predict(parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 24.0}), facts)
    strong = predict(parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 13.0}), facts)
    assert weak is not None and weak.below != 84.0 and "under 84 °C" in weak.text and "back under" not in weak.text
    assert strong is not None and strong.checkable and strong.below == 84.0 and strong.settles_at < weak.settles_at
    assert predict(parse_action({"kind": "notify", "message": "x"}), facts) is None


def test_emergency_when_the_shutdown_temperature_is_projected() -> None:
    from actors.agent.planner import projects_shutdown

    assert not projects_shutdown({"peak_projected_c": 91.9, "model": "H100-SXM"})
    assert projects_shutdown({"peak_projected_c": 92.0, "model": "H100-SXM"}), "H100 shuts down at 92 °C"
    assert projects_shutdown({"peak_projected_c": 95.0}), "unknown model: the H100 limits"
    assert not projects_shutdown({"peak_projected_c": 95.0, "shutdown_c": 99.0})
    assert not projects_shutdown({})
