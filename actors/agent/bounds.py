"""The bounds a proposed action's numbers must keep: its cited runbook step's limits and the GPU's own range.

The planner derives a parameter from :func:`step_bounds` (``Bound.pick``); every proposal, the runbook mapping's
or a model's, is then held to :func:`check_bounds`. A step's limits come from the runbook's front matter
(``knowledge.limits``); the hardware's from the GPU's model profile, or from the range the source reports
(``power_min_w`` / ``power_max_w`` in the incident's facts, as NVML's power management limit constraints give it).
A cooling unit's supply setpoint is never below the room's dew point (``dew_point_c`` in the facts, else
``DEFAULT_DEW_POINT_C``): coolant colder than that condenses water on pipes, manifolds and cold plates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from actors.agent.proposals import Cited
from actors.twin.profiles import canonical_model, profile
from knowledge.documents import ActionTemplate, Document
from knowledge.limits import NUMERIC_PARAMS, Bound, allowed
from policies.actions import Action, SetCoolingSetpoint, describe

#: The room's dew point when the incident reports none: the upper dew point of ASHRAE's recommended envelope for
#: data centres, 15 °C (classes A1–A4; ASHRAE TC 9.9, *Thermal Guidelines for Data Processing Environments*, 5th ed.,
#: 2021). A room at 24 °C and 55 % RH has a dew point of 14.4 °C (Magnus formula), just under it.
DEFAULT_DEW_POINT_C = 15.0
#: The catalogue's own ceiling for a supply setpoint (``SetCoolingSetpoint.supply_c``'s ``le``).
SUPPLY_MAX_C = next(m.le for m in SetCoolingSetpoint.model_fields["supply_c"].metadata if hasattr(m, "le"))


class Documents(Protocol):
    def document(self, doc_id: str) -> Document | None: ...


def hardware_bound(kind: str, param: str, facts: Mapping[str, Any]) -> Bound | None:
    """The range the hardware accepts for a parameter, where one is known: a GPU's power limit; a cooling unit's
    supply setpoint, not below the dew point (the facility's range, refused with the reason on the approval card)."""
    if (kind, param) == ("set_cooling_setpoint", "supply_c"):
        reported = isinstance(facts.get("dew_point_c"), int | float)
        dew = float(facts["dew_point_c"]) if reported else DEFAULT_DEW_POINT_C
        source = (f"the dew point {dew:g} °C the incident reports" if reported
                  else f"{dew:g} °C, the upper dew point of ASHRAE's recommended envelope, as no dew point is reported")
        why = f"not below {source}: colder coolant condenses water"
        return Bound(lo=dew, hi=max(dew, SUPPLY_MAX_C), unit="°C", why=(why,))
    if (kind, param) != ("set_power_limit", "watts"):
        return None
    prof = profile(str(facts.get("model") or ""))
    reported = isinstance(facts.get("power_min_w"), int | float) and isinstance(facts.get("power_max_w"), int | float)
    lo = float(facts["power_min_w"]) if reported else prof.power_min_w
    hi = float(facts["power_max_w"]) if reported else prof.tdp_w
    source = "the GPU reports" if reported else f"{prof.name} accepts"
    return Bound(lo=lo, hi=hi, unit="W", why=(f"{source} {lo:g}–{hi:g} W",))


def step_bounds(template: ActionTemplate, facts: Mapping[str, Any]) -> tuple[dict[str, Bound], list[str]]:
    """Each limited parameter's bound for this incident (the step's limit narrowed to the hardware's range), and
    why the step cannot be followed now (a fact missing, no range for this GPU model, nothing left)."""
    model = canonical_model(str(facts["model"])) if facts.get("model") else None
    bounds: dict[str, Bound] = {}
    problems: list[str] = []
    for param, limit in template.limits.items():
        bound = allowed(limit, facts, model)
        hw = hardware_bound(template.kind, param, facts)
        if isinstance(bound, Bound) and hw is not None:
            bound = bound.narrowed(hw.lo, hw.hi, hw.why[0])
            if bound.lo > bound.hi:
                bound = f"the step's range is outside what the hardware accepts ({hw.why[0]})"
        if isinstance(bound, str):
            problems.append(f"{param}: {bound}")
        else:
            bounds[param] = bound
    return bounds, problems


def check_bounds(action: Action, bounds: Mapping[str, Bound], facts: Mapping[str, Any]) -> list[str]:
    """Problems with an action's numbers: each outside its step's bound or the hardware's range. Empty: it obeys."""
    problems = []
    for param in NUMERIC_PARAMS.get(action.kind, ()):
        value = float(getattr(action, param))
        for bound in (bounds.get(param), hardware_bound(action.kind, param, facts)):
            if bound is not None and not bound.holds(value):
                problems.append(f"{describe(action)}: {param}={value:g} is outside {bound.text}")
    return problems


def cited_template(docs: Documents, kind: str, citations: Iterable[Cited]) -> ActionTemplate | None:
    """The action template of ``kind`` at a cited step: the step an action of that kind rests on."""
    for c in citations:
        doc = docs.document(c.doc_id)
        for t in doc.actions if doc is not None else ():
            if t.kind == kind and t.step == c.step_id:
                return t
    return None
