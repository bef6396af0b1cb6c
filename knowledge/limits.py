"""What a runbook step allows an action's numbers to be, written in the runbook itself (issue #15).

An action template in a runbook's front matter names the numeric parameters it sets under ``limits``; the
planner derives each value from the limit and the live facts, and verification holds every proposal (the
runbook mapping's or a model's) to the limits of the step it cites::

    actions:
      - kind: set_cooling_setpoint
        step: s3
        params: {unit: "{unit}"}
        limits:
          supply_c: {from: setpoint_c, change: [-4, -2], min: 18, above: {dew_point_c: 2}, unit: "°C"}

A limit's fields (all optional; together they narrow one interval):

- ``min`` / ``max``: absolute bounds ("never below 18 °C").
- ``from`` + ``change``: the allowed change from the live value of an incident fact (``[-4, -2]``: lower it by
  2 to 4). Without that fact the step cannot be applied (a step relative to a value nobody reported).
- ``models``: an absolute range per GPU model (``{H100: [450, 500], A100: [300, 300]}``), matched on the model
  profile's name; a GPU of a model the step does not name cannot take it.
- ``above``: floors from live facts, ``{fact: margin}`` ("at least the dew point plus 2 K"), applied when the fact
  is known.
- ``prefer``: ``low`` (default) or ``high``, the end of the interval the planner proposes.
- ``unit``: shown beside the value on the approval card.

:func:`allowed` turns a limit and the facts into a :class:`Bound` (the interval, and the words that justify it);
``opsloop knowledge lint`` reports action templates whose numeric parameters carry no limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

#: The numeric parameters of the action catalogue, by action kind: each needs a limit in a runbook template.
NUMERIC_PARAMS: dict[str, tuple[str, ...]] = {
    "set_power_limit": ("watts",),
    "set_cooling_setpoint": ("supply_c",),
    "set_fan_speed": ("percent",),
}


class ParamLimit(BaseModel):
    """What one runbook step allows for one numeric parameter (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    min: float | None = None
    max: float | None = None
    from_: str | None = Field(None, alias="from", pattern=r"^[a-z_]+$")
    change: tuple[float, float] | None = None
    models: dict[str, tuple[float, float]] = Field(default_factory=dict)
    above: dict[str, float] = Field(default_factory=dict)
    prefer: Literal["low", "high"] = "low"
    unit: str = Field("", max_length=8)

    @model_validator(mode="after")
    def _consistent(self) -> ParamLimit:
        if (self.from_ is None) != (self.change is None):
            raise ValueError("'from' and 'change' go together: the change is counted from that fact's value")
        pairs = [("change", self.change)] if self.change else []
        pairs += [(f"models.{m}", r) for m, r in self.models.items()]
        for name, (lo, hi) in pairs:
            if lo > hi:
                raise ValueError(f"{name}: [{lo}, {hi}] is empty (the lower end comes first)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Bound(BaseModel):
    """The interval a parameter must lie in for one incident, and the reasons for each end."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # ``text`` is derived: a stored copy carries it

    lo: float
    hi: float
    unit: str = ""
    why: tuple[str, ...] = ()
    prefer: Literal["low", "high"] = "low"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """The bound as the approval card shows it: ``21–23 °C (2–4 °C below the current 25 °C; …)``."""
        span = _num(self.lo) if math.isclose(self.lo, self.hi) else f"{_num(self.lo)}–{_num(self.hi)}"
        reasons = "; ".join(self.why)
        return f"{span} {self.unit}".rstrip() + (f" ({reasons})" if reasons else "")

    def holds(self, value: float) -> bool:
        return self.lo - 1e-6 <= value <= self.hi + 1e-6

    def pick(self) -> float:
        """The value the planner proposes: the preferred end, rounded to what an operator would type."""
        return round(self.lo if self.prefer == "low" else self.hi, 1)

    def narrowed(self, lo: float, hi: float, why: str) -> Bound:
        """This bound intersected with ``[lo, hi]`` (the hardware's range, say); ``why`` joins the reasons when it
        narrows anything."""
        if lo <= self.lo and hi >= self.hi:
            return self
        return self.model_copy(update={"lo": max(self.lo, lo), "hi": min(self.hi, hi), "why": (*self.why, why)})


def _num(x: float) -> str:
    return f"{x:g}"


def allowed(limit: ParamLimit, facts: Mapping[str, object], model: str | None = None) -> Bound | str:
    """The interval ``limit`` allows given the live ``facts`` (and the GPU ``model``'s profile name), or why the
    step cannot be applied now (a fact it counts from is missing, the model has no range, the interval is
    empty)."""
    lo, hi, why = -math.inf, math.inf, []
    u = f" {limit.unit}" if limit.unit else ""
    if limit.from_ is not None and limit.change is not None:
        current = facts.get(limit.from_)
        if not isinstance(current, int | float):
            return f"the step changes {limit.from_} relative to its current value, which is not known"
        a, b = limit.change
        lo, hi = float(current) + a, float(current) + b
        if b <= 0:
            why.append(f"{_num(-b)}–{_num(-a)}{u} below the current {_num(float(current))}{u}")
        elif a >= 0:
            why.append(f"{_num(a)}–{_num(b)}{u} above the current {_num(float(current))}{u}")
        else:
            why.append(f"within {_num(a)}…+{_num(b)}{u} of the current {_num(float(current))}{u}")
    if limit.models:
        if model not in limit.models:
            return f"the step gives no range for a {model or 'GPU of unknown model'} (only {', '.join(limit.models)})"
        m_lo, m_hi = limit.models[model]
        lo, hi = max(lo, m_lo), min(hi, m_hi)
        why.append(f"{model}: {_num(m_lo)}–{_num(m_hi)}{u}" if m_lo != m_hi else f"{model}: {_num(m_lo)}{u}")
    if limit.min is not None:
        lo = max(lo, limit.min)
        why.append(f"never below {_num(limit.min)}{u}")
    if limit.max is not None:
        hi = min(hi, limit.max)
        why.append(f"never above {_num(limit.max)}{u}")
    for fact, margin in limit.above.items():
        value = facts.get(fact)
        if isinstance(value, int | float):
            lo = max(lo, float(value) + margin)
            why.append(f"at least {fact} {_num(float(value))} + {_num(margin)}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "the limit does not bound the value on both sides (give min/max, models or from+change)"
    if lo > hi + 1e-9:
        return f"nothing satisfies it: {'; '.join(why)}"
    return Bound(lo=lo, hi=hi, unit=limit.unit, why=tuple(why), prefer=limit.prefer)
