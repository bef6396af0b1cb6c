"""The approval state machine, pure."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.approvals import (
    UNRECORDED,
    Approval,
    Decision,
    Refusal,
    decide,
    expire,
    finish,
    open_approval,
    refuse_unbound,
    start,
)
from policies.actions import action_hash, parse_action
from policies.policy import Verdict

ACTION = parse_action({"kind": "drain_node", "node": "n01"})


def approval(mode: str = "approve", approvers: int = 1):
    pa = ProposedAction(action_id="act-1", action=ACTION, citations=(), rationale="test")
    cause = RootCause(kind="k", subject="s", why="w")
    prop = Proposal(proposal_id="pr-1", incident_id="inc-1", ts=1.0, root_cause=cause, diagnosis="d", actions=(pa,),
                    source="fallback", verified=True, confidence=0.5)
    return open_approval(prop, pa, Verdict(mode=mode, approvers=approvers, reason="r"), now=100.0, expiry_s=60)


def d(decision: str, by: str = "alice", ts: float = 110.0, **kw) -> Decision:
    """A decision on the action ``approval()`` shows (its hash), through the HTTP API, unless ``kw`` says else."""
    return Decision(**{"decision": decision, "by": by, "reason": "because", "ts": ts, "channel": "http",
                       "action_hash": action_hash(ACTION), **kw})


def test_policy_verdict_sets_the_initial_state() -> None:
    assert approval("approve").status == "pending"
    assert approval("auto").status == "approved"
    assert approval("deny").status == "denied"


def test_one_approver_approves_and_execution_follows() -> None:
    ap = decide(approval(), d("approve"))
    assert ap.status == "approved"
    ap = finish(start(ap, 111), {"status": "executed", "detail": "ok"}, 112)
    assert ap.status == "executed" and ap.result == {"status": "executed", "detail": "ok"} and ap.updated_ts == 112


def test_second_decision_is_refused_and_changes_nothing() -> None:
    ap = decide(approval(), d("reject"))
    again = decide(ap, d("approve", by="bob"))
    assert isinstance(again, Refusal) and again.code == "conflict"
    assert ap.status == "rejected"


def test_two_person_rule_needs_distinct_approvers() -> None:
    ap = approval(approvers=2)
    ap = decide(ap, d("approve", by="alice"))
    assert ap.status == "pending"
    assert isinstance(decide(ap, d("approve", by="alice")), Refusal)
    assert decide(ap, d("approve", by="bob")).status == "approved"


def test_decision_binds_to_the_action_shown() -> None:
    stale = decide(approval(), d("approve", action_hash="0" * 64))
    assert isinstance(stale, Refusal) and stale.code == "stale"
    assert stale.message.endswith("the action changed since you saw it; reload")
    assert decide(approval(), d("approve", action_hash=action_hash(ACTION))).status == "approved"


def test_a_decision_must_name_the_hash_it_was_shown() -> None:
    with pytest.raises(ValidationError, match="action_hash"):
        Decision(decision="approve", by="alice", ts=110.0, channel="http")
    unbound = refuse_unbound(approval(), 110.0)
    assert unbound.code == "stale" and "reload" in unbound.message
    done = decide(approval(), d("reject"))
    assert refuse_unbound(done, 110.0).code == "conflict", "a decided approval says so first"


def test_a_decision_stored_before_hashes_were_required_still_loads() -> None:
    ap = decide(approval(), d("approve"))
    data = ap.model_dump(mode="json")
    del data["decisions"][0]["action_hash"]  # as an earlier opsloop stored a CLI decision
    old = Approval.model_validate(data)
    assert old.decisions[0].action_hash == UNRECORDED and old.decisions[0].by == "alice"


def test_expired_approval_cannot_be_approved() -> None:
    ap = approval()
    assert expire(ap, 159.0) is None
    expired = expire(ap, 161.0)
    assert expired is not None and expired.status == "expired"
    assert isinstance(decide(ap, d("approve", ts=170.0)), Refusal)
