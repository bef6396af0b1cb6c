"""Undo (issue #18 item 8): an executed action that has an inverse records it on its approval, and an operator's undo
proposes that inverse anew, citing the approval it undoes; the gateway judges it by the same policy as any proposal.

The inverses: ``drain_node`` → ``resume_node`` of that drain (``drained_by``: its approval; only that drain is lifted);
``set_power_limit``, ``set_cooling_setpoint`` and ``set_fan_speed`` → the same call with the value before. The value
before is, first, what the actuator's result says it changed from (``700 -> 300 W``, ``25.0 → 21.0 °C``), else the
twin's reading taken just before the execution (setpoints and fan speeds; the twin reports no power limit), else
what the actuator read when it stated the effect (``power limit 650 W (NVML)``). Unknown, the same as the new value,
or outside the catalogue's bounds: no inverse, and no Undo is offered. Other kinds have none (a reset, a requeue, a
cordon: nothing undoes them in the catalogue). Pure: no IO.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import ValidationError

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.approvals import Approval
from actors.gateway.effects import Effect
from policies.actions import Action, DrainNode, ResumeNode, parse_action

#: The kinds whose inverse is the same call with the value before: kind → (its value's field, its unit).
VALUED: dict[str, tuple[str, str]] = {
    "set_power_limit": ("watts", "W"),
    "set_cooling_setpoint": ("supply_c", "°C"),
    "set_fan_speed": ("percent", "%"),
}
#: The twin's reading of the value before, per kind it reports: (snapshot collection, name field, value field). The
#: twin reports no power limit: a power limit's value before is the actuator's word only.
_TWIN = {"set_cooling_setpoint": ("units", "unit", "setpoint_c"), "set_fan_speed": ("units", "unit", "fan_pct")}
#: The kinds whose value before the twin may give (the gateway asks it for a snapshot before running them).
TWIN_READ = frozenset(_TWIN)
_NUM = r"(-?[0-9]+(?:\.[0-9]+)?)"
#: What an effect's ``current`` says the value is, per kind (the twin's words, NVML's, a Modbus register's).
_READ = {
    "set_power_limit": re.compile(rf"power limit {_NUM} W"),
    "set_cooling_setpoint": re.compile(rf"(?:supply setpoint {_NUM} °C|^{_NUM} °C \(register)"),
    "set_fan_speed": re.compile(rf"(?:fan speed {_NUM} %|^{_NUM} % \(register)"),
}
#: How close a number in a detail must be to the new value to be the change's "to" (details round: 700, 25.0).
_ROUNDING = 0.51
#: Undo approvals in these states may be proposed again (nothing of them ran, or it failed).
RETRY_AFTER = frozenset({"rejected", "denied", "expired", "failed"})


def _changed_from(kind: str, new: float, detail: str) -> float | None:
    """The value a result's detail says the target had before it became ``new``: ``a -> b <unit>`` or ``a → b``."""
    unit = re.escape(VALUED[kind][1])
    for m in re.finditer(rf"{_NUM} (?:->|→) {_NUM} {unit}", detail):
        if abs(float(m.group(2)) - new) <= _ROUNDING:
            return float(m.group(1))
    return None


def _twin_reading(action: Any, before: dict[str, Any] | None) -> float | None:
    if action.kind not in _TWIN:
        return None
    rows, key, field = _TWIN[action.kind]
    name = getattr(action, key)
    row = next((r for r in (before or {}).get(rows) or () if isinstance(r, dict) and r.get(key) == name), None)
    value = (row or {}).get(field)
    return float(value) if isinstance(value, int | float) else None


def _read(kind: str, effect: Effect | None) -> float | None:
    if effect is None or effect.current is None or effect.call.startswith("nothing"):
        return None
    m = _READ[kind].search(effect.current)
    return float(next(g for g in m.groups() if g is not None)) if m else None


def value_before(action: Action, detail: str, before: dict[str, Any] | None, effect: Effect | None) -> float | None:
    """The value ``action``'s target had before it ran (see the module's docstring for the order), or None."""
    if action.kind not in VALUED:
        return None
    new = float(getattr(action, VALUED[action.kind][0]))
    for value in (_changed_from(action.kind, new, detail), _twin_reading(action, before), _read(action.kind, effect)):
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
    field = VALUED[action.kind][0]
    value = value_before(action, str(result.get("detail") or ""), before, ap.effect)
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
