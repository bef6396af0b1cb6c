"""What approving an action will run, stated before anyone approves it: the exact call, where it goes, the
target's value now and the value it will have (issue #18: "What will run, shown before it runs").

An actuator states its own calls (``async effect(action, approval_id) -> Effect``); the gateway asks it when it opens
an approval and again on an edit, keeps the answer on the approval and puts :attr:`Effect.text` in the audit entry.
Every card (dashboard, Slack, CLI) shows that same text as its "Will run" line. An actuator that does not read the
target's value leaves ``current`` ``None``, and the gateway fills in the twin's latest reading (:func:`twin_current`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from policies.actions import Action, describe

#: What ``current`` says when neither the actuator nor the twin reads the target.
UNKNOWN = "unknown"


def compose(call: str, where: str, current: str | None, new: str) -> str:
    """The one line every surface shows and the audit records: ``<call> on <where> — current: …; new: …``."""
    return f"{call} on {where} — current: {current or UNKNOWN}; new: {new}"


class Effect(BaseModel):
    """The exact effect of an approved action (``text`` is derived from the rest, always)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call: str  # the command or API call, as it will be sent ("nothing: …" when nothing will be)
    where: str  # the host, endpoint or service it goes to
    current: str | None = None  # the target's value now ("unknown (why)"); None: not read by the actuator
    new: str  # the value it will have
    # ``current`` as data, keyed by the action's field ({"watts": 650.0}), when the actuator read it: the value an
    # undo sets back when the result does not say (actors.gateway.undo); None: not read.
    reading: dict[str, float | str] | None = None
    text: str = ""

    @model_validator(mode="before")
    @classmethod
    def _text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "text": compose(str(data.get("call", "")), str(data.get("where", "")),
                                            data.get("current"), str(data.get("new", "")))}
        return data

    def with_current(self, current: str) -> Effect:
        """The same effect with ``current`` filled in (its text follows)."""
        return Effect(call=self.call, where=self.where, current=current, new=self.new)


def new_value(action: Action) -> str:
    """The target's value once ``action`` has run, in words."""
    a: Any = action
    return {
        "set_power_limit": lambda: f"{a.gpu} power limit {a.watts:g} W",
        "set_cooling_setpoint": lambda: f"{a.unit} supply setpoint {a.supply_c:.1f} °C",
        "set_fan_speed": lambda: f"{a.unit} fan speed {a.percent:.0f} %",
        "drain_node": lambda: f"{a.node} drained: no new jobs start there, running ones finish",
        "resume_node": lambda: f"{a.node} back in service (the drain of {a.drained_by} lifted): jobs start there",
        "cordon_gpu": lambda: f"{a.gpu} out of scheduling",
        "reset_gpu": lambda: f"{a.gpu} reset (what runs on it is killed)",
        "migrate_job": lambda: f"job {a.job} off {', '.join(a.avoid)}",
        "disable_link": lambda: f"link {a.link} out of service",
        "open_ticket": lambda: f"a {a.severity} ticket: {a.summary}",
        "notify": lambda: f"a message to the on-call operators: {a.message}",
    }[action.kind]()


def fallback(action: Action, why: str) -> Effect:
    """The effect of an action whose actuator does not state it (``why``): the action as catalogued."""
    return Effect(call=describe(action), where=f"the configured actuator ({why})", new=new_value(action))


def _find(rows: Any, key: str, name: str) -> dict[str, Any] | None:
    return next((r for r in rows or () if isinstance(r, dict) and r.get(key) == name), None)


def twin_current(action: Action, snapshot: dict[str, Any]) -> str:
    """The target's value now as the twin last read it (``snapshot``: the twin's), or why it is not known."""
    a: Any = action
    seen = "(the twin's latest reading)"
    if action.kind in ("set_cooling_setpoint", "set_fan_speed"):
        unit = _find(snapshot.get("units"), "unit", a.unit) or {}
        if action.kind == "set_fan_speed":
            fan = unit.get("fan_pct")
            if fan is None:
                return f"{UNKNOWN} (the twin has no fan reading of {a.unit})"
            return f"{a.unit} fan speed {fan:.0f} % {seen}"
        if unit.get("setpoint_c") is not None:
            return f"{a.unit} supply setpoint {unit['setpoint_c']:.1f} °C {seen}"
        if unit.get("supply_c") is not None:
            return f"{a.unit} supply {unit['supply_c']:.1f} °C, its setpoint not reported {seen}"
        return f"{UNKNOWN} (the twin has no reading of {a.unit})"
    if action.kind in ("set_power_limit", "cordon_gpu", "reset_gpu"):
        gpu = _find(snapshot.get("gpus"), "gpu", a.gpu)
        if gpu is None:
            return f"{UNKNOWN} (the twin has no reading of {a.gpu})"
        parts = [f"{gpu['sensed_c']:.1f} °C" if gpu.get("sensed_c") is not None else "",
                 f"drawing {gpu['power_w']:.0f} W" if gpu.get("power_w") is not None else ""]
        limit = "; its power limit is not reported" if action.kind == "set_power_limit" else ""
        return f"{a.gpu} {', '.join(p for p in parts if p) or 'reporting'} {seen[:-1]}{limit})"
    if action.kind == "drain_node":
        gpus = [g for g in snapshot.get("gpus") or () if isinstance(g, dict) and g.get("node") == a.node]
        if not gpus:
            return f"{UNKNOWN} (the twin has no reading of {a.node})"
        temps = [g["sensed_c"] for g in gpus if g.get("sensed_c") is not None]
        hottest = f", hottest {max(temps):.1f} °C" if temps else ""
        return f"{a.node} in service, {len(gpus)} GPU(s){hottest} {seen}"
    if action.kind in ("open_ticket", "notify"):
        return "n/a (nothing in the fleet changes)"
    return f"{UNKNOWN} (the twin does not report the state of this {action.kind.split('_', 1)[1]})"
