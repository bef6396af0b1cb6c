"""The approval card shows each number beside the bound its cited step allows, on Slack and in the CLI (the
dashboard's card is checked in a real browser by test_dashboard_browser)."""

from __future__ import annotations

from actors.agent.incidents import IncidentBook
from actors.agent.planner import plan
from actors.gateway.approvals import open_approval
from cluster.cli.approvals import describe, row
from knowledge.retrieval import KnowledgeBase
from policies.policy import Verdict
from serving.slack_blocks import approval_blocks
from tests.agent.test_incidents_and_planner import TOPOLOGY, fault_events

BOUND = "21–23 °C (2–4 °C below the current 25 °C; never below 18 °C)"


def pending_setpoint() -> dict:
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    proposal = plan(inc, KnowledgeBase.bundled(dense=False), TOPOLOGY)
    ap = open_approval(proposal, proposal.actions[0], Verdict(mode="approve", approvers=1, reason="r"), 10.0, 60.0)
    return ap.model_dump(mode="json")


def test_slack_and_cli_show_the_bound_beside_the_value() -> None:
    ap = pending_setpoint()
    assert ap["action"]["supply_c"] == 21.0 and ap["bounds"]["supply_c"]["text"] == BOUND
    fields = [f["text"] for b in approval_blocks(ap) for f in b.get("fields", [])]
    assert f"*Allowed by the step*\nsupply_c: {BOUND}" in fields
    assert f"  bound        supply_c: {BOUND}" in describe(ap)
    assert row(ap)["bounds"]["supply_c"]["lo"] == 21.0


def test_every_surface_says_whether_the_model_or_the_runbook_mapping_proposed() -> None:
    mapped = pending_setpoint()
    assert mapped["source"] == "fallback"
    assert "*Proposed by*\nthe runbook mapping (no model)" in [
        f["text"] for b in approval_blocks(mapped) for f in b.get("fields", [])]
    assert "  proposed by  the runbook mapping (no model)" in describe(mapped)

    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    proposal = plan(inc, KnowledgeBase.bundled(dense=False), TOPOLOGY).model_copy(
        update={"source": "llm", "emergency": True})
    verdict = Verdict(mode="auto", approvers=0, reason="emergency", emergency=True)
    ap = open_approval(proposal, proposal.actions[0], verdict, 10.0, 60.0).model_dump(mode="json")
    assert ap["source"] == "llm" and row(ap)["source"] == "llm"
    said = next(line for line in describe(ap) if line.startswith("  proposed by"))
    assert "the model, inside the cited step's bounds" in said and "numbers are the step's own" in said
