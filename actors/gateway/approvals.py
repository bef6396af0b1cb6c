"""Approvals and their state machine (pure: no IO, no clock of its own; time is passed in).

    pending ──approve×N──▶ approved ──start──▶ executing ──finish──▶ executed | failed
       │ │└──reject──▶ rejected     └──hold──▶ denied (the policy holds an auto action back; it never ran)
       │ └──expire──▶ expired (counts as denied)          denied (by policy at open, never runs)
       └──edit──▶ pending | approved | denied   (the edited action is verified and judged again)

Every status change goes through :data:`TRANSITIONS` (the shells never set a status themselves): a change
that is not in it raises :class:`IllegalTransition`, a bug in the caller. What an operator may not do (decide
twice, approve their own edit, decide an expired approval) is refused as data (``Refusal``), never raised.

A decision binds to the hash of the exact action it was shown (required: a stale or missing hash is refused,
``stale``, and the approval stays pending); the approvers must be distinct, hold a role
the policy names, and none of them may be the proposer (the agent, or the operator who edited the action).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.agent.proposals import Cited, Prediction, Proposal, ProposedAction
from actors.gateway.effects import Effect
from knowledge.limits import Bound
from policies.actions import Action, action_hash, describe
from policies.policy import Verdict

Status = Literal["pending", "approved", "rejected", "denied", "expired", "executing", "executed", "failed"]
# Set by the server from the route (README, HTTP API: Channels); "dashboard" and "cli" decisions were recorded before
# the body could no longer name its channel, and still load.
Channel = Literal["http", "cli", "dashboard", "slack", "policy", "agent", "gateway"]
FINAL: frozenset[str] = frozenset({"rejected", "denied", "expired", "executed", "failed"})
#: Every status change there is: from → the statuses it may go to (a final status goes nowhere).
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "approved", "rejected", "expired", "denied"}),  # pending: 1st of 2 approvals, edit
    "approved": frozenset({"executing", "denied"}),  # denied: held back by the policy before it ran
    "executing": frozenset({"executed", "failed"}),
    **{final: frozenset() for final in FINAL},
}
AGENT = "agent"


#: The refusal of a decision whose ``action_hash`` is not the approval's current one.
STALE = "the action changed since you saw it; reload"
#: The refusal of a decision that names no ``action_hash`` at all.
UNBOUND = ("the decision names no action_hash: it is bound to the action you saw, which may have changed since; "
           "reload and send its action_hash")
#: What a decision stored before decisions carried the hash records instead of one (it is never a valid hash).
UNRECORDED = "unrecorded"


class Decision(BaseModel):
    """One operator's ✓ or ✗.

    ``channel`` is where the decision really came from, set by the server from the route and credential it
    arrived through (never by the client); ``client`` is what the client said about itself (its User-Agent),
    kept for information only. ``action_hash`` is the hash of the action the operator was shown: required,
    and it must be the approval's current one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=64)
    role: str = "approver"
    reason: str = Field("", max_length=2000)
    channel: Channel
    client: str = Field("", max_length=200)
    ts: float
    action_hash: str = Field(min_length=1, max_length=64)


class Edit(BaseModel):
    """One operator's change of an action's parameters (kept in the approval's history)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str
    channel: Channel
    reason: str
    ts: float
    before: dict[str, Any]
    after: dict[str, Any]
    verdict: str


class Approval(BaseModel):
    """One proposed action waiting for (or past) its decision (a record: changes make a new one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str
    proposal_id: str
    incident_id: str
    action_id: str
    action: Action
    action_hash: str
    summary: str
    rationale: str
    citations: tuple[Cited, ...] = ()
    bounds: dict[str, Bound] = Field(default_factory=dict)  # each number's range from the cited step, with why
    root_cause: dict[str, Any] = Field(default_factory=dict)
    status: Status
    required: int = 0
    roles: tuple[str, ...] = ("approver", "admin")
    policy: str
    proposer: str = AGENT
    # the proposal's: the model's choice, or the runbook mapping; "operator": an operator's undo (``undo_of``)
    source: Literal["llm", "fallback", "operator"] = "fallback"
    emergency: bool = False
    decisions: list[Decision] = Field(default_factory=list)
    edits: list[Edit] = Field(default_factory=list)
    effect: Effect | None = None  # what approving it will run (the actuator's word, shown on every card); None: unknown
    prediction: Prediction | None = None
    result: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    inverse: Action | None = None  # set as it executes: the action that undoes it (None: it has none, or unknown)
    undo_of: str | None = None  # this approval proposes the inverse of that one (an operator's undo)
    undone_by: str | None = None  # the latest undo proposed of this one
    created_ts: float
    updated_ts: float
    expires_ts: float | None = None
    traceparent: str | None = None  # the latest approval-stage span of the incident's trace (set by the shell)

    @field_validator("decisions", mode="before")
    @classmethod
    def _legacy_decisions(cls, value: Any) -> Any:
        """Decisions stored before the hash was required load with ``UNRECORDED`` in its place (nothing lost)."""
        if isinstance(value, list):
            return [{**d, "action_hash": d.get("action_hash") or UNRECORDED} if isinstance(d, dict) else d
                    for d in value]
        return value


class Refusal(BaseModel):
    """Why a decision was not taken; the serving layer maps ``code`` to an HTTP status."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Literal["not_found", "conflict", "stale", "forbidden", "blocked", "invalid"]
    message: str


class IllegalTransition(ValueError):
    """A status change the state machine does not have: a bug in the caller, never an operator's doing."""


def _move(ap: Approval, status: Status, now: float, **update: Any) -> Approval:
    """``ap`` in ``status`` (with ``update``), if :data:`TRANSITIONS` has that change.

    Raises:
        IllegalTransition: it does not.
    """
    allowed = TRANSITIONS[ap.status]
    if status not in allowed:
        to = ", ".join(sorted(allowed)) if allowed else f"nowhere ({ap.status} is final)"
        raise IllegalTransition(f"approval {ap.approval_id}: {ap.status} -> {status} is not a transition "
                                f"(from {ap.status} only to {to})")
    return ap.model_copy(update={**update, "status": status, "updated_ts": now})


def approval_id(action_id: str) -> str:
    """The approval id of an action id (stable: a repeated proposal maps onto the same approval)."""
    return "ap-" + hashlib.sha256(action_id.encode()).hexdigest()[:12]


def _judged(verdict: Verdict, now: float, default_expiry_s: float) -> dict[str, Any]:
    status = {"auto": "approved", "approve": "pending", "deny": "denied"}[verdict.mode]
    expiry = verdict.expiry_s or default_expiry_s
    return {"status": status, "required": verdict.approvers, "roles": tuple(verdict.roles), "policy": verdict.reason,
            "emergency": verdict.emergency, "expires_ts": now + expiry if status == "pending" else None}


def open_approval(proposal: Proposal, pa: ProposedAction, verdict: Verdict, now: float, expiry_s: float,
                  effect: Effect | None = None) -> Approval:
    """The approval for one proposed action, in the state the policy's verdict puts it (``effect``: what approving it
    will run, as its actuator states it)."""
    return Approval(
        approval_id=approval_id(pa.action_id), proposal_id=proposal.proposal_id, incident_id=proposal.incident_id,
        action_id=pa.action_id, action=pa.action, action_hash=action_hash(pa.action), summary=describe(pa.action),
        rationale=pa.rationale, citations=pa.citations, bounds=pa.bounds, root_cause=proposal.root_cause.model_dump(),
        prediction=pa.prediction, source=proposal.source, created_ts=now, updated_ts=now, effect=effect,
        **_judged(verdict, now, expiry_s),
    )


def _undecidable(ap: Approval, now: float) -> Refusal | None:
    if ap.status != "pending":
        return Refusal(code="conflict", message=f"approval {ap.approval_id} is already {ap.status}")
    if ap.expires_ts is not None and now >= ap.expires_ts:
        return Refusal(code="conflict", message=f"approval {ap.approval_id} expired")
    return None


def refuse_unbound(ap: Approval, now: float) -> Refusal:
    """The refusal of a decision that names no action hash: the approval's state when that already rules any
    decision out, else ``stale`` (a decision is bound to the action its decider saw, or it is not taken)."""
    return _undecidable(ap, now) or Refusal(code="stale", message=f"approval {ap.approval_id}: {UNBOUND}")


def check_decision(ap: Approval, d: Decision) -> Refusal | None:
    """Why ``d`` may not be applied to ``ap`` (None: it may)."""
    refusal = _undecidable(ap, d.ts)
    if refusal is not None:
        return refusal
    if d.action_hash != ap.action_hash:
        return Refusal(code="stale", message=f"approval {ap.approval_id}: {STALE}")
    if d.decision == "approve" and d.by == ap.proposer:
        return Refusal(code="forbidden", message=f"{d.by} proposed this action and cannot approve it")
    if d.decision == "approve" and d.role not in ap.roles:
        return Refusal(code="forbidden", message=f"role {d.role} may not approve {ap.action.kind} "
                       f"(needs {' or '.join(ap.roles)})")
    if any(x.by == d.by for x in ap.decisions):
        return Refusal(code="conflict", message=f"{d.by} has already decided approval {ap.approval_id}")
    return None


def decide(ap: Approval, d: Decision) -> Approval | Refusal:
    """Apply one decision; returns the new approval or a refusal (the input is never modified)."""
    refusal = check_decision(ap, d)
    if refusal is not None:
        return refusal
    decisions = [*ap.decisions, d]
    if d.decision == "reject":
        status: Status = "rejected"
    else:
        status = "approved" if sum(x.decision == "approve" for x in decisions) >= ap.required else "pending"
    return _move(ap, status, d.ts, decisions=decisions)


def edit(
    ap: Approval, action: Action, verdict: Verdict, *, by: str, channel: Channel, reason: str, now: float,
    expiry_s: float, effect: Effect | None = None,
) -> Approval | Refusal:
    """Replace a pending approval's action with an edited one, judged again by ``verdict``.

    The earlier approvals are void (they approved another action); the editor becomes the proposer, so they
    cannot approve their own edit; the action id changes with the action (actuators are idempotent by it). The
    earlier action's effect goes with it: ``effect`` is the edited one's (``None``: unknown).
    """
    if ap.status != "pending":
        return Refusal(code="conflict", message=f"approval {ap.approval_id} is {ap.status}; only pending ones edit")
    if ap.expires_ts is not None and now >= ap.expires_ts:
        return Refusal(code="conflict", message=f"approval {ap.approval_id} expired")
    if action.kind != ap.action.kind:
        return Refusal(code="invalid", message=f"an edit keeps the kind ({ap.action.kind}); propose anew instead")
    new_hash = action_hash(action)
    if new_hash == ap.action_hash:
        return Refusal(code="invalid", message="the edit changes nothing")
    record = Edit(by=by, channel=channel, reason=reason, ts=now, before=ap.action.model_dump(mode="json"),
                  after=action.model_dump(mode="json"), verdict=verdict.reason)
    new_id = "act-" + hashlib.sha256(f"{ap.action_id}|edit|{new_hash}".encode()).hexdigest()[:12]
    judged = _judged(verdict, now, expiry_s)
    if judged["status"] == "approved" and not verdict.emergency:
        # An operator's edit of an action that needs no approval still gets a second pair of eyes.
        judged.update(status="pending", required=1, expires_ts=now + expiry_s)
    status = judged.pop("status")
    return _move(ap, status, now, action=action, action_hash=new_hash, action_id=new_id, summary=describe(action),
                 proposer=by, decisions=[], edits=[*ap.edits, record], effect=effect, **judged)


def expire(ap: Approval, now: float) -> Approval | None:
    """The expired approval if its time ran out while pending, else None."""
    if ap.status == "pending" and ap.expires_ts is not None and now >= ap.expires_ts:
        return _move(ap, "expired", now)
    return None


def hold(ap: Approval, why: str, now: float) -> Approval:
    """An approved action the policy holds back before it ever ran (change window, blast radius): denied, and the
    policy text says why. The shell holds an auto action as it opens; an operator's approval that the policy
    holds back is refused instead (:func:`blocked`), so their decision is not recorded either.

    Raises:
        IllegalTransition: ``ap`` is not approved.
    """
    if ap.status != "approved":  # pending -> denied is an edit's, not a hold
        raise IllegalTransition(f"approval {ap.approval_id}: {ap.status} -> denied is not a transition by hold "
                                "(only an approved action is held back)")
    return _move(ap, "denied", now, policy=f"{ap.policy}; held: {why}")


def blocked(why: str) -> Refusal:
    """The refusal of a decision whose approval the policy holds back now (nothing executed, nothing recorded)."""
    return Refusal(code="blocked", message=f"not executed and not recorded: {why}")


def start(ap: Approval, now: float) -> Approval:
    """An approved action handed to the actuator: executing (a gateway that dies now resumes it).

    Raises:
        IllegalTransition: ``ap`` is not approved.
    """
    return _move(ap, "executing", now)


def finish(ap: Approval, result: dict[str, Any], now: float, inverse: Action | None = None) -> Approval:
    """An executing action with its actuator's result (an ``ActionResult`` as JSON): executed or failed; an executed
    one keeps ``inverse``, the action that undoes it (``actors.gateway.undo.inverse``).

    Raises:
        IllegalTransition: ``ap`` is not executing, or the result's status is neither executed nor failed.
    """
    kept = inverse if result.get("status") == "executed" else None
    return _move(ap, result.get("status"), now, result=result, inverse=kept)  # type: ignore[arg-type]


def proposed_undo(ap: Approval, undo_id: str, now: float) -> Approval:
    """An executed approval with the approval that proposes its inverse (``undo_id``); the status stays executed.

    Raises:
        IllegalTransition: ``ap`` is not executed or has no inverse.
    """
    if ap.status != "executed" or ap.inverse is None:
        raise IllegalTransition(f"approval {ap.approval_id}: only an executed action with an inverse is undone "
                                f"(it is {ap.status})")
    return ap.model_copy(update={"undone_by": undo_id, "updated_ts": now})


def record_outcome(ap: Approval, outcome: dict[str, Any], now: float) -> Approval:
    """An executed action with its judged outcome (met, missed, unobservable); the status stays executed.

    Raises:
        IllegalTransition: ``ap`` is not executed, has no prediction to judge, or was judged already.
    """
    if ap.status != "executed" or ap.prediction is None or ap.outcome is not None:
        raise IllegalTransition(f"approval {ap.approval_id}: only an executed action with a prediction and no "
                                f"outcome yet takes one (it is {ap.status})")
    return ap.model_copy(update={"outcome": outcome, "updated_ts": now})
