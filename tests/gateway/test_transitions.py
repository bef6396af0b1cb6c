"""The approvals state machine owns every status change (pure: no Redis, no Ray): each transition of the table is
made by one function, anything else raises ``IllegalTransition`` with the approval, both states and what is
allowed; an operator's impossible decision is a ``Refusal`` (data), never an exception. And the typed replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import pytest
from pydantic import ValidationError

from actors.agent.proposals import Prediction
from actors.gateway.approvals import (
    FINAL,
    TRANSITIONS,
    Approval,
    IllegalTransition,
    Refusal,
    Status,
    blocked,
    decide,
    edit,
    expire,
    finish,
    hold,
    record_outcome,
    start,
)
from actors.gateway.replies import Reply
from policies.actions import parse_action
from policies.policy import Verdict
from tests.gateway.test_approvals import approval, d

NEW = parse_action({"kind": "drain_node", "node": "n02"})
EXECUTED = {"status": "executed", "detail": "ok", "ts": 0.0}


def in_state(status: str) -> Approval:
    return approval().model_copy(update={"status": status})


def edited(mode: str, emergency: bool = False) -> Callable[[Approval], Approval | Refusal]:
    verdict = Verdict(mode=mode, approvers=1, reason=f"edit judged {mode}", emergency=emergency)
    return lambda ap: edit(ap, NEW, verdict, by="oscar", channel="http", reason="r", now=120.0, expiry_s=60)


#: (from, to) → a public function that makes that change.
MOVES: dict[tuple[str, str], Callable[[Approval], Approval | Refusal | None]] = {
    ("pending", "pending"): lambda ap: decide(ap.model_copy(update={"required": 2}), d("approve")),
    ("pending", "approved"): lambda ap: decide(ap, d("approve")),
    ("pending", "rejected"): lambda ap: decide(ap, d("reject")),
    ("pending", "expired"): lambda ap: expire(ap, 161.0),
    ("pending", "denied"): edited("deny"),
    ("approved", "executing"): lambda ap: start(ap, 111.0),
    ("approved", "denied"): lambda ap: hold(ap, "outside its change window", 100.0),
    ("executing", "executed"): lambda ap: finish(ap, EXECUTED, 112.0),
    ("executing", "failed"): lambda ap: finish(ap, {**EXECUTED, "status": "failed"}, 112.0),
}


def test_the_table_covers_every_status_and_final_ones_go_nowhere() -> None:
    assert set(TRANSITIONS) == set(get_args(Status))
    assert {s for s, to in TRANSITIONS.items() if not to} == set(FINAL)
    assert set(MOVES) == {(f, t) for f, tos in TRANSITIONS.items() for t in tos}, "a transition without its test"


@pytest.mark.parametrize(("src", "dst"), sorted(MOVES))
def test_every_transition(src: str, dst: str) -> None:
    before = in_state(src)
    after = MOVES[(src, dst)](before)
    assert isinstance(after, Approval) and after.status == dst, after
    assert before.status == src, "the input is never modified"


def test_an_edit_of_an_emergency_action_may_approve_it_and_of_a_safe_one_still_asks() -> None:
    auto = edited("auto", emergency=True)(approval())
    assert isinstance(auto, Approval) and auto.status == "approved" and auto.expires_ts is None
    safe = edited("auto")(approval())
    assert isinstance(safe, Approval) and (safe.status, safe.required) == ("pending", 1)


def test_hold_denies_with_the_reason_and_never_runs() -> None:
    held = hold(in_state("approved"), "2 of 1 per hour", 100.0)
    assert held.status == "denied" and held.policy == "r; held: 2 of 1 per hour"
    with pytest.raises(IllegalTransition, match="denied -> executing"):
        start(held, 101.0)
    assert blocked("outside its change window") == Refusal(
        code="blocked", message="not executed and not recorded: outside its change window")


@pytest.mark.parametrize("status", sorted(set(get_args(Status)) - {"approved"}))
def test_only_an_approved_action_starts_or_is_held(status: str) -> None:
    ap = in_state(status)
    with pytest.raises(IllegalTransition) as err:
        start(ap, 111.0)
    assert str(err.value).startswith(f"approval {ap.approval_id}: {status} -> executing is not a transition")
    with pytest.raises(IllegalTransition, match=f"{status} -> denied is not a transition"):
        hold(ap, "why", 111.0)


@pytest.mark.parametrize("status", sorted(set(get_args(Status)) - {"executing"}))
def test_only_an_executing_action_finishes(status: str) -> None:
    with pytest.raises(IllegalTransition, match=f"{status} -> executed is not a transition"):
        finish(in_state(status), EXECUTED, 112.0)


def test_an_error_says_what_is_allowed_instead() -> None:
    with pytest.raises(IllegalTransition, match=r"executed -> executing .*only to nowhere \(executed is final\)"):
        start(in_state("executed"), 1.0)
    with pytest.raises(IllegalTransition, match=r"executing -> rejected .*only to executed, failed"):
        finish(in_state("executing"), {**EXECUTED, "status": "rejected"}, 1.0)
    assert issubclass(IllegalTransition, ValueError)


@pytest.mark.parametrize("status", sorted(set(get_args(Status)) - {"pending"}))
def test_deciding_editing_or_expiring_a_settled_approval_is_data_not_an_error(status: str) -> None:
    ap = in_state(status)
    for refusal in (decide(ap, d("approve")), decide(ap, d("reject")), edited("approve")(ap)):
        assert isinstance(refusal, Refusal) and refusal.code == "conflict" and status in refusal.message
    assert expire(ap, 1e9) is None


def test_an_outcome_is_recorded_once_on_an_executed_action_with_a_prediction() -> None:
    pred = Prediction(metric="max_sensed_c", subject="n01", below=84.0, within_s=90)
    done = in_state("executed").model_copy(update={"prediction": pred})
    judged = record_outcome(done, {"verdict": "met"}, 200.0)
    assert judged.status == "executed" and judged.outcome == {"verdict": "met"} and judged.updated_ts == 200.0
    for bad in (judged, in_state("executed"), in_state("executing").model_copy(update={"prediction": pred})):
        with pytest.raises(IllegalTransition, match="takes one"):
            record_outcome(bad, {"verdict": "met"}, 201.0)


def test_an_approval_is_a_record() -> None:
    ap = approval()
    with pytest.raises(ValidationError, match="frozen"):
        ap.status = "approved"  # type: ignore[misc]


def test_a_reply_carries_exactly_one_of_approval_and_refusal() -> None:
    ap, no = approval(), Refusal(code="stale", message="reload")
    assert Reply.of(ap).as_json() == {"approval": ap.model_dump(mode="json")}
    assert Reply.of(no).as_json() == {"refusal": {"code": "stale", "message": "reload"}}
    assert Reply.refused("stale", "reload") == Reply.of(no)
    for bad in ({}, {"approval": ap, "refusal": no}):
        with pytest.raises(ValidationError, match="either an approval or a refusal"):
            Reply(**bad)
    with pytest.raises(ValidationError):
        Reply(approval=ap, extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Reply.refused("teapot", "no such code")
    with pytest.raises(ValidationError, match="frozen"):
        Reply.of(ap).refusal = no  # type: ignore[misc]
