"""The gateway shell's spans: ``approval`` (opened, decided), ``action`` and ``outcome`` of an incident's trace.

Each continues the traceparent the upstream message carried (the proposal's, then the approval's) and hands
its own on: the approval stores it, the actuator puts it into the ``ActionResult``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from actors.agent.proposals import Proposal
from actors.gateway.approvals import Approval, Decision
from actors.tracing import stage_span, traceparent_of

SERVICE = "gateway"


def _ids(ap: Approval) -> dict[str, Any]:
    return {"opsloop.incident_id": ap.incident_id, "opsloop.proposal_id": ap.proposal_id,
            "opsloop.approval_id": ap.approval_id, "opsloop.action_id": ap.action_id,
            "opsloop.action_kind": ap.action.kind}


def opened(ap: Approval, proposal: Proposal) -> Approval:
    """The approval as opened, carrying its ``approval`` span (status: the policy's verdict)."""
    with stage_span("approval", "gateway.approval.open", SERVICE, parent=proposal.traceparent,
                    attrs={**_ids(ap), "opsloop.status": ap.status, "opsloop.policy": ap.policy}) as span:
        tp = traceparent_of(span)
    return ap.model_copy(update={"traceparent": tp}) if tp else ap


def decided(ap: Approval, d: Decision, opened_ts: float) -> Approval:
    """The approval after an operator's decision, carrying the decision's ``approval`` span."""
    attrs = {**_ids(ap), "opsloop.decision": d.decision, "opsloop.by": d.by, "opsloop.channel": d.channel,
             "opsloop.status": ap.status, "opsloop.decision_latency_s": round(d.ts - opened_ts, 3)}
    with stage_span("approval", "gateway.approval.decision", SERVICE, parent=ap.traceparent, attrs=attrs) as span:
        tp = traceparent_of(span)
    return ap.model_copy(update={"traceparent": tp}) if tp else ap


@contextmanager
def action(ap: Approval) -> Iterator[str | None]:
    """The ``action`` span around an actuator call; yields the traceparent the actuator passes on."""
    with stage_span("action", "gateway.action", SERVICE, parent=ap.traceparent, attrs=_ids(ap)) as span:
        yield traceparent_of(span)


def outcome(ap: Approval, verdict: str, observed: Any) -> str | None:
    """The ``outcome`` span: the action's effect as observed on the twin; continues the action's trace."""
    parent = (ap.result or {}).get("traceparent") or ap.traceparent
    attrs = {**_ids(ap), "opsloop.verdict": verdict, "opsloop.observed": str(observed)[:200]}
    with stage_span("outcome", "gateway.outcome", SERVICE, parent=parent, attrs=attrs) as span:
        return traceparent_of(span)
