"""The approval card shows each number beside the bound its cited step allows, who proposed it, and what approving it
will run, on Slack and in the CLI (the dashboard's card is checked in a real browser by test_dashboard_browser)."""

from __future__ import annotations

from actors.agent.incidents import IncidentBook
from actors.agent.planner import plan
from actors.gateway.approvals import open_approval
from actors.gateway.effects import Effect
from cluster.cli.approvals import describe, row
from knowledge.retrieval import KnowledgeBase
from policies.policy import Verdict
from serving.slack_blocks import NO_EFFECT, approval_blocks
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


def test_every_surface_shows_what_will_run_before_it_runs() -> None:
    book = IncidentBook()
    inc = next(i for i, needs in (book.observe(e) for e in fault_events()) if needs)
    proposal = plan(inc, KnowledgeBase.bundled(dense=False), TOPOLOGY)
    effect = Effect(call="write holding register 40001 = 210 (21.0 °C), read it back",
                    where="Modbus TCP 10.0.0.5:502 device 1 (cu01 supply setpoint)",
                    current="25.0 °C (register 40001 read now) & <steady>", new="21.0 °C")
    verdict = Verdict(mode="approve", approvers=1, reason="r")
    ap = open_approval(proposal, proposal.actions[0], verdict, 10.0, 60.0, effect).model_dump(mode="json")
    slack = [b["text"]["text"] for b in approval_blocks(ap) if b["type"] == "section" and "text" in b]
    assert slack[0] == ("*Will run*\nwrite holding register 40001 = 210 (21.0 °C), read it back on Modbus TCP "
                        "10.0.0.5:502 device 1 (cu01 supply setpoint) — current: 25.0 °C (register 40001 read now) "
                        "&amp; &lt;steady&gt;; new: 21.0 °C")  # first after the header, escaped for mrkdwn
    assert f"  will run     {effect.text}" in describe(ap)
    assert row(ap)["effect"]["text"] == effect.text

    unstated = pending_setpoint()  # opened without one (before effects were stated)
    assert f"*Will run*\n{NO_EFFECT}" in [b["text"]["text"] for b in approval_blocks(unstated) if "text" in b]
    assert f"  will run     {NO_EFFECT}" in describe(unstated)
