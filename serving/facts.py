"""Facts from the fleet, words from the model (issue #19): the exact lines an ``opsloop`` answer leads with.

:class:`FleetFacts` holds what the twin, the gateway and the agent said, typed; :func:`classify` reads which live
state a question asks about (plain word rules); :func:`fact_sheet` picks the matching lines, each copied from
that data with its source; :func:`render` makes the block every ``opsloop`` answer opens with, whatever the
model writes after it. Runbook passages appear only as one-line quotes labelled with their citation: their text
never becomes a fleet fact, nor a value the checker (:mod:`serving.fact_check`) accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from policies.actions import NODE_PATTERN, describe, parse_action

APPROVALS_SHOWN = 5
INCIDENTS_SHOWN = 5
EVENTS_SHOWN = 5
HOTTEST_SHOWN = 3
NAMED_SHOWN = 8  # GPUs, nodes, units or approval ids a question names that get a line each
QUOTE_CHARS = 240
HEADER = "Facts (verbatim from the live twin, the approval gateway, the agent and the runbooks):"
APPROVAL_ID = re.compile(r"\bap-[0-9a-z]{4,64}\b", re.I)
INCIDENT_ID = re.compile(r"\binc-[0-9a-z]{4,64}\b", re.I)
GPU_NAME = re.compile(rf"(?<![\w.-])({NODE_PATTERN})/gpu(\d{{1,3}})\b", re.I)


class Intent(StrEnum):
    """What live state a question asks about."""

    hottest = "hottest"
    temperature = "temperature"
    approvals = "approvals"
    incidents = "incidents"
    events = "events"
    runbook = "runbook"


_RULES: dict[Intent, re.Pattern[str]] = {k: re.compile(v, re.I) for k, v in {
    Intent.hottest: r"\b(hottest|warmest|hotter|hot|overheat\w*|heat(ing)?|thermal)\b",
    Intent.temperature: r"\b(temp|temps|temperatures?|degrees?|celsius)\b|°",
    Intent.approvals: r"\b(approv\w*|pending|waiting|decisions?|decide|sign[- ]?off)\b|\bap-\w",
    Intent.incidents: r"\b(incidents?|root[- ]?causes?|causes?d?|why|wrong|going on|problems?|issues?)\b|\binc-\w",
    Intent.events: r"\b(events?|happen\w*|recent(ly)?|latest|lately|alerts?|alarms?|log)\b",
    Intent.runbook: r"\b(runbooks?|steps?|procedures?|sop|mop|eop|manuals?|what should|how (do|should|can) "
                    r"(i|we)|how to)\b",
}.items()}


def classify(question: str) -> frozenset[Intent]:
    """The intents a question's words name (empty: a general question, answered with an overview)."""
    if not isinstance(question, str):
        raise TypeError(f"the question must be text, not {type(question).__name__}")
    return frozenset(i for i, rule in _RULES.items() if rule.search(question))


class Fact(BaseModel):
    """One line of the facts block: text copied from the data, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    source: str

    def line(self) -> str:
        return f"- {self.text} [{self.source}]"


class GpuFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    node: str
    sensed_c: float | None = None
    est_c: float | None = None
    projected_c: float | None = None
    slowdown_c: float | None = None
    max_operating_c: float | None = None
    alarm: bool = False

    def readings(self) -> list[float]:
        """The temperatures it is at now (sensed, estimated, projected)."""
        return [v for v in (self.sensed_c, self.est_c, self.projected_c) if v is not None]

    def temperatures(self) -> list[float]:
        """Every temperature the facts give for it (readings and its thresholds)."""
        return self.readings() + [v for v in (self.slowdown_c, self.max_operating_c) if v is not None]


class UnitFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    text: str
    temperatures: tuple[float, ...] = ()


class ApprovalFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str
    status: str
    kind: str
    action: str
    incident_id: str
    required: int = 0
    approvals: int = 0


class IncidentFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str
    text: str


class FleetFacts(BaseModel):
    """What the answer may state as live fact. A source that did not answer is ``None``, not empty."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float | None = None
    gpus: tuple[GpuFact, ...] | None = None
    units: tuple[UnitFact, ...] = ()
    approvals: tuple[ApprovalFact, ...] | None = None
    incidents: tuple[IncidentFact, ...] | None = None
    events: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, snapshot: Mapping[str, Any] | None, approvals: Sequence[Mapping[str, Any]] | None,
        agent_status: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]] = (),
    ) -> FleetFacts:
        """Type the twin's snapshot, the gateway's approvals (newest first), the agent's status and events."""
        gpus = units = None
        if snapshot:
            gpus = tuple(_gpu(g) for g in _rows(snapshot.get("gpus")) if isinstance(g, Mapping) and g.get("gpu"))
            units = tuple(_unit(u) for u in _rows(snapshot.get("units")) if isinstance(u, Mapping) and u.get("unit"))
        aps = None if approvals is None else tuple(
            _approval(a) for a in approvals if isinstance(a, Mapping) and a.get("approval_id"))
        incs = None
        if agent_status is not None:
            incs = tuple(_incident(i) for i in _rows(agent_status.get("open_incidents"))
                         if isinstance(i, Mapping) and i.get("incident_id"))
        evs = tuple(_event(e) for e in list(events)[-EVENTS_SHOWN:] if isinstance(e, Mapping))
        ts = float(snapshot["ts"]) if snapshot and isinstance(snapshot.get("ts"), int | float) else None
        return cls(ts=ts, gpus=gpus, units=units or (), approvals=aps, incidents=incs, events=evs)

    def gpu(self, name: str) -> GpuFact | None:
        return next((g for g in self.gpus or () if g.name.lower() == name.lower()), None)

    def node_gpus(self, node: str) -> list[GpuFact]:
        return [g for g in self.gpus or () if g.node.lower() == node.lower()]

    def nodes(self) -> list[str]:
        return sorted({g.node for g in self.gpus or ()})

    def hottest(self) -> list[GpuFact]:
        """GPUs with a sensed temperature, hottest first."""
        return sorted((g for g in self.gpus or () if g.sensed_c is not None), key=lambda g: -(g.sensed_c or 0.0))

    def pending(self) -> list[ApprovalFact]:
        return [a for a in self.approvals or () if a.status == "pending"]

    def approval(self, approval_id: str) -> ApprovalFact | None:
        return next((a for a in self.approvals or () if a.approval_id.lower() == approval_id.lower()), None)

    def incident_ids(self) -> set[str]:
        """Incidents the facts name: the open ones and those the listed approvals belong to."""
        return {i.incident_id.lower() for i in self.incidents or ()} | {
            a.incident_id.lower() for a in self.approvals or ()}


def _rows(v: Any) -> list[Any]:
    """A list from the data, or none (a snapshot or status of another shape gives no facts, not an error)."""
    return list(v) if isinstance(v, list | tuple) else []


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _c(v: float | None) -> str:
    """A temperature exactly as the data gave it."""
    return "n/a" if v is None else f"{v} °C"


def _gpu(g: Mapping[str, Any]) -> GpuFact:
    name = str(g["gpu"])
    return GpuFact(name=name, node=str(g.get("node") or name.split("/", 1)[0]), sensed_c=_num(g.get("sensed_c")),
                   est_c=_num(g.get("est_c")), projected_c=_num(g.get("projected_c")),
                   slowdown_c=_num(g.get("slowdown_c")), max_operating_c=_num(g.get("max_operating_c")),
                   alarm=bool(g.get("alarm")))


def _parts(v: Any) -> list[float]:
    """A number, or a per-part mapping's numbers (units may report one value per loop)."""
    if isinstance(v, Mapping):
        return [x for x in (_num(p) for p in v.values()) if x is not None]
    return [x] if (x := _num(v)) is not None else []


def _unit(u: Mapping[str, Any]) -> UnitFact:
    supply, setpoint = _parts(u.get("supply_c")), _parts(u.get("setpoint_c"))
    raw = u.get("flow_frac")
    flows = raw.items() if isinstance(raw, Mapping) else [("", raw)]
    flow = ", ".join(f"{k} {x:.0%}".strip() for k, x in flows if _num(x) is not None)
    text = (f"Cooling unit {u['unit']}: supply {', '.join(map(str, supply)) or 'n/a'} °C, setpoint "
            f"{', '.join(map(str, setpoint)) or 'n/a'} °C, flow {flow or 'n/a'}"
            f"{', in alarm' if u.get('alarm') else ''}")
    return UnitFact(name=str(u["unit"]), text=text, temperatures=tuple(supply + setpoint))


def _approval(a: Mapping[str, Any]) -> ApprovalFact:
    raw = a.get("action") or {}
    try:
        action = describe(parse_action(raw))
    except (ValidationError, ValueError, TypeError):  # an action of an older catalogue: shown as stored
        action = f"{raw.get('kind', '?') if isinstance(raw, Mapping) else '?'}({raw})"
    approved = sum(1 for d in a.get("decisions") or [] if isinstance(d, Mapping) and d.get("decision") == "approve")
    return ApprovalFact(approval_id=str(a["approval_id"]), status=str(a.get("status")),
                        kind=str(raw.get("kind", "?")) if isinstance(raw, Mapping) else "?", action=action,
                        incident_id=str(a.get("incident_id") or ""), required=int(a.get("required") or 0),
                        approvals=approved)


def _incident(i: Mapping[str, Any]) -> IncidentFact:
    rc = i.get("root_cause") or {}
    why = f" ({rc['why']})" if rc.get("why") else ""
    text = f"Open incident {i['incident_id']}: root cause {rc.get('kind')} on {rc.get('subject')}{why}"
    return IncidentFact(incident_id=str(i["incident_id"]), text=text)


def _event(e: Mapping[str, Any]) -> str:
    ts = _num(e.get("ts"))
    return (f"Event at t={ts if ts is not None else '?'} s: {e.get('severity')} {e.get('kind')} on {e.get('subject')}"
            + (f" ({e['event_id']})" if e.get("event_id") else ""))


# --- what a text names ------------------------------------------------------------------------------------------
def mentions(text: str, fleet: FleetFacts) -> list[tuple[int, str, str]]:
    """``(position, kind, name)`` of each GPU (``gpu``; known or not), known node and known cooling unit in text."""
    out: list[tuple[int, str, str]] = [(m.start(), "gpu", f"{m.group(1)}/gpu{m.group(2)}")
                                       for m in GPU_NAME.finditer(text)]
    for kind, names in (("node", fleet.nodes()), ("unit", [u.name for u in fleet.units])):
        if not names:
            continue
        alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        canon = {n.lower(): n for n in names}
        rule = re.compile(rf"(?<![\w/.-])({alts})(?![\w-]|/gpu|\.\w)", re.I)
        out += [(m.start(), kind, canon[m.group(1).lower()]) for m in rule.finditer(text)]
    return sorted(out)


# --- the sheet -----------------------------------------------------------------------------------------------------
def _twin(fleet: FleetFacts) -> str:
    return f"twin t={fleet.ts} s" if fleet.ts is not None else "twin"


def gpu_line(g: GpuFact) -> str:
    """One GPU's temperatures, exactly as the snapshot has them."""
    return (f"{g.name} (node {g.node}): {_c(g.sensed_c)} sensed, estimated {_c(g.est_c)}, projected "
            f"{_c(g.projected_c)}; slowdown at {_c(g.slowdown_c)}, max operating {_c(g.max_operating_c)}"
            f"{'; in alarm' if g.alarm else ''}")


def _hottest(fleet: FleetFacts) -> list[Fact]:
    ranked = fleet.hottest()
    if not ranked:
        return [Fact(text="The twin has no GPU temperature.", source=_twin(fleet))]
    node = ranked[0].node
    on_node = [g for g in ranked if g.node == node]
    alarms = sum(g.alarm for g in fleet.node_gpus(node))
    top = ", ".join(f"{g.name} {_c(g.sensed_c)}" for g in on_node[:HOTTEST_SHOWN])
    lines = [f"Hottest node: {node} ({top} sensed; {alarms} of {len(fleet.node_gpus(node))} GPUs in alarm)",
             "Hottest GPUs: " + ", ".join(f"{g.name} {_c(g.sensed_c)}" for g in ranked[:HOTTEST_SHOWN]) + " sensed"]
    return [Fact(text=t, source=_twin(fleet)) for t in lines]


def _named(question: str, fleet: FleetFacts) -> list[Fact]:
    out: list[Fact] = []
    named = list(dict.fromkeys((kind, name) for _, kind, name in mentions(question, fleet)))
    for kind, name in named[:NAMED_SHOWN]:
        if kind == "gpu":
            g = fleet.gpu(name)
            text = gpu_line(g) if g else f"{name} is not in the twin's fleet (nodes: {', '.join(fleet.nodes())})"
        elif kind == "node":
            ranked = [g for g in fleet.hottest() if g.node == name]
            alarms = sum(g.alarm for g in fleet.node_gpus(name))
            text = (f"Node {name}: hottest GPU {ranked[0].name} at {_c(ranked[0].sensed_c)} sensed; {alarms} of "
                    f"{len(fleet.node_gpus(name))} GPUs in alarm" if ranked else f"Node {name}: no temperature")
        else:
            text = next(u.text for u in fleet.units if u.name == name)
        out.append(Fact(text=text, source=_twin(fleet)))
    return out


def _approvals(question: str, fleet: FleetFacts) -> list[Fact]:
    if fleet.approvals is None:
        return [Fact(text="The approval gateway did not answer; pending approvals are unknown.", source="gateway")]
    out = []
    for wanted in list(dict.fromkeys(m.group(0).lower() for m in APPROVAL_ID.finditer(question)))[:NAMED_SHOWN]:
        a = fleet.approval(wanted)
        out.append(Fact(text=f"Approval {a.approval_id} is {a.status}: {a.action} (incident {a.incident_id})" if a
                        else f"No approval {wanted} among the gateway's latest approvals", source="gateway"))
    pending = fleet.pending()
    out += [Fact(text=f"Pending approval {a.approval_id}: {a.action} (incident {a.incident_id}; {a.approvals} of "
                 f"{a.required} approvals)", source="gateway") for a in pending[:APPROVALS_SHOWN]]
    if len(pending) > APPROVALS_SHOWN:
        out.append(Fact(text=f"{len(pending) - APPROVALS_SHOWN} more pending approvals", source="gateway"))
    if not pending:
        out.append(Fact(text="No approval is waiting for a decision.", source="gateway"))
    return out


def _incidents(fleet: FleetFacts) -> list[Fact]:
    if fleet.incidents is None:
        return [Fact(text="The agent did not answer; open incidents are unknown.", source="agent")]
    shown = [Fact(text=i.text, source="agent") for i in fleet.incidents[:INCIDENTS_SHOWN]]
    return shown or [Fact(text="No open incident.", source="agent")]


def _runbook(passages: Sequence[tuple[Any, str]]) -> list[Fact]:
    out = []
    for ref, text in passages[:2]:
        body = " ".join((text.split("\n", 1)[-1] if "\n" in text.strip() else text).split())  # one line, always
        quote = body if len(body) <= QUOTE_CHARS else body[:QUOTE_CHARS].rsplit(" ", 1)[0] + " …"
        out.append(Fact(text=f'Runbook "{ref.title}" says: “{quote}”', source=ref.tag.strip("[]")))
    return out or [Fact(text="No runbook passage matches this question.", source="knowledge base")]


def fact_sheet(question: str, fleet: FleetFacts, passages: Sequence[tuple[Any, str]] = ()) -> list[Fact]:
    """The facts a question asks for, in a fixed order; a general question gets an overview."""
    intents = classify(question)
    if fleet.gpus is None:
        out = [Fact(text="The twin did not answer; no live fleet data.", source="twin")]
    else:
        named = _named(question, fleet)
        wants_hot = Intent.hottest in intents or (Intent.temperature in intents and not named) or not intents
        out = (_hottest(fleet) if wants_hot else []) + named
    if Intent.approvals in intents or not intents:
        out += _approvals(question, fleet)
    if Intent.incidents in intents or not intents:
        out += _incidents(fleet)
    if Intent.events in intents:
        out += [Fact(text=e, source="event log") for e in fleet.events] or [
            Fact(text="No recent event.", source="event log")]
    if Intent.runbook in intents:
        out += _runbook(passages)
    return out


def render(facts: Sequence[Fact]) -> str:
    """The block the answer opens with."""
    return "\n".join([HEADER, *(f.line() for f in facts)])
