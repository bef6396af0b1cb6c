"""Undo (issue #18 item 8): an executed action that has an inverse records it on its approval, and an operator's undo
proposes that inverse anew, citing the approval it undoes; the gateway judges it by the same policy as any proposal.

The inverses: ``drain_node`` → ``resume_node`` of that drain (``drained_by``: its approval; only that drain is lifted);
``set_power_limit``, ``set_cooling_setpoint`` and ``set_fan_speed`` → the same call with the value before. The value
before is data, never read back from words: first the actuator's result's ``previous`` (what it read just before it
changed the value), else the twin's reading taken just before the execution (setpoints and fan speeds; the twin
reports no power limit), else the effect's ``reading`` (what the actuator read when it stated the effect). None of
them, the same as the new value, or outside the catalogue's bounds: no inverse, and an undo is refused ("no recorded
inverse"). Other kinds have none (a reset, a requeue, a cordon: nothing undoes them in the catalogue). Pure: no IO.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.approvals import Approval
from actors.gateway.effects import Effect
from policies.actions import Action, DrainNode, ResumeNode, parse_action

#: The kinds whose inverse is the same call with the value before: kind → its value's field (the key of the value in
#: ``ActionResult.previous`` and ``Effect.reading``).
VALUED: dict[str, str] = {"set_power_limit": "watts", "set_cooling_setpoint": "supply_c", "set_fan_speed": "percent"}
#: The twin's reading of the value before, per kind it reports: (snapshot collection, name field, value field). The
#: twin reports no power limit: a power limit's value before is the actuator's word only.
_TWIN = {"set_cooling_setpoint": ("units", "unit", "setpoint_c"), "set_fan_speed": ("units", "unit", "fan_pct")}
#: The kinds whose value before the twin may give (the gateway asks it for a snapshot before running them).
TWIN_READ = frozenset(_TWIN)
#: Undo approvals in these states may be proposed again (nothing of them ran, or it failed).
RETRY_AFTER = frozenset({"rejected", "denied", "expired", "failed"})


def _number(values: Any, field: str) -> float | None:
    """``values[field]`` when ``values`` (a result's ``previous``, an effect's ``reading``, a twin's row) holds a
    number there."""
    value = values.get(field) if isinstance(values, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _twin_reading(action: Any, before: dict[str, Any] | None) -> float | None:
    if action.kind not in _TWIN:
        return None
    rows, key, field = _TWIN[action.kind]
    name = getattr(action, key)
    row = next((r for r in (before or {}).get(rows) or () if isinstance(r, dict) and r.get(key) == name), None)
    return _number(row, field)


def value_before(action: Action, previous: Any, before: dict[str, Any] | None, effect: Effect | None) -> float | None:
    """The value ``action``'s target had before it ran (see the module's docstring for the order), or None."""
    if action.kind not in VALUED:
        return None
    field = VALUED[action.kind]
    for value in (_number(previous, field), _twin_reading(action, before),
                  _number(effect.reading if effect is not None else None, field)):
        if value is not None:
            return value
    return None


def inverse(ap: Approval, result: dict[str, Any], before: dict[str, Any] | None = None) -> Action | None:
    """The action that undoes approval ``ap`` once its actuator's ``result`` (an ``ActionResult`` as JSON) says it
    executed (``before``: the twin's snapshot taken just before it ran), or None when it has none."""
    if result.get("status") != "executed":
        return None
    action = ap.action
    if isinstance(action, DrainNode):
        return ResumeNode(node=action.node, drained_by=ap.approval_id)
    if action.kind not in VALUED:
        return None
    field = VALUED[action.kind]
    value = value_before(action, result.get("previous"), before, ap.effect)
    if value is None or abs(value - float(getattr(action, field))) < 1e-9:
        return None
    try:
        return parse_action({**action.model_dump(mode="json"), field: value})
    except ValidationError:  # outside the catalogue's bounds: not a value opsloop may set
        return None


def undo_proposal(ap: Approval, by: str, reason: str, ts: float) -> Proposal:
    """The proposal of ``ap``'s inverse, asked by operator ``by``: one action, citing the approval it undoes. Its ids
    are stable (a repeated undo opens nothing new), and a new one follows an undo that did not run
    (``ap.undone_by``)."""
    assert ap.inverse is not None, "only an approval with an inverse is undone"
    seed = f"{ap.action_id}|undo|{ap.undone_by or ''}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
    why = f"undo of {ap.approval_id} ({ap.summary}), asked by {by}" + (f": {reason}" if reason else "")
    return Proposal(
        proposal_id=f"pr-undo-{digest}", incident_id=ap.incident_id, ts=ts,
        root_cause=RootCause.model_validate(ap.root_cause) if ap.root_cause else RootCause(
            kind="undo", subject=ap.approval_id, why=why),
        diagnosis=why, actions=(ProposedAction(action_id=f"act-undo-{digest}", action=ap.inverse, citations=(),
                                               rationale=why),),
        source="fallback", verified=True, confidence=1.0, traceparent=ap.traceparent,
    )
