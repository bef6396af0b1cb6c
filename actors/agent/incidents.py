"""Incidents: related events grouped by topology and time, with the root cause that explains the rest.

Grouping key: the cooling unit when the event names one (a unit's degradation explains the heat of every
GPU it cools), else the node, else the subject. Deterministic: the same events in the same order give
the same incidents with the same ids.

Topology says which unit *could* explain a GPU's heat; a measured lead says it did: the twin attaches to a
GPU's thermal event how its unit's supply temperature led the GPU's temperature (``lead``: series, lag,
Pearson r). A cooling root cause cites those measurements in its ``why`` and in ``facts["lead"]``.

Alertmanager's alerts (``alert_firing`` / ``alert_resolved``) join the open incident of the GPU or node their
labels name; an alert with no such incident opens one (under the key its node's thermal events will use) that the
twin's events then join, and a measured cause outranks it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actors.twin.events import Event

#: How strongly an event kind claims to be the cause of what it is grouped with (higher wins).
CAUSE_RANK = {
    "coolant_leak": 110,  # a leak explains the cooling trouble and the heat around it
    "cooling_degraded": 100,
    "network_bottleneck": 90,
    "link_degraded": 85,  # a sick link: the bottleneck it causes, when there is one, is the same incident
    "xid_error": 80,
    "power_capped": 60,
    "gpu_overheat": 50,
    "thermal_slowdown": 45,
    "thermal_slowdown_predicted": 40,
    "straggler": 30,
    "clock_drop": 20,
    "sensor_fault": 10,
    "alert_firing": 5,  # a monitoring rule matched: the twin's own measurements explain more
}
RECOVERY = {"thermal_recovered", "cooling_recovered", "alert_resolved"}
FEEDBACK = {"action_executed", "action_failed", "action_rejected"}
#: Kinds that make an incident worth proposing for (a cause alone may not hurt anything yet).
IMPACT = {"thermal_slowdown_predicted", "thermal_slowdown", "gpu_overheat", "xid_error", "network_bottleneck",
          "link_degraded", "straggler", "power_capped", "sensor_fault", "coolant_leak", "alert_firing"}
#: Alertmanager's alerts (actors.twin.alerts): they join the incident of the GPU or node their labels name.
ALERTS = {"alert_firing", "alert_resolved"}


class RootCause(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    subject: str
    why: str


class Incident(BaseModel):
    """A group of events with one root cause; ``open`` until every affected subject has recovered."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str
    key: str
    opened_ts: float
    last_ts: float
    event_ids: list[str] = Field(default_factory=list)
    kinds: dict[str, int] = Field(default_factory=dict)
    subjects: list[str] = Field(default_factory=list)
    leads: dict[str, dict[str, Any]] = Field(default_factory=dict)  # GPU → its best-fitting measured lead
    hot: list[str] = Field(default_factory=list)  # subjects with an unrecovered impact event
    root_cause: RootCause
    root_event: dict[str, Any]
    facts: dict[str, Any] = Field(default_factory=dict)
    status: str = "open"
    revision: int = 0  # bumped when the root cause changes; a proposal is made per revision
    replanned: bool = False  # re-planned once after an operator's rejection


THERMAL = {"thermal_slowdown_predicted", "thermal_slowdown", "gpu_overheat", "thermal_recovered"}
#: Where a measured lead is cited in a root cause's ``why`` (everything after it is rewritten as leads come).
MEASURED = "; measured: "
PER_GPU = {"xid_error", "sensor_fault"}
POWER = {"power_capped", "clock_drop"}


def lead_unit(ev: Event) -> str | None:
    """The cooling unit whose supply temperature measurably led this event's GPU, if the twin measured one."""
    lead = ev.data.get("lead")
    series = lead.get("series") if isinstance(lead, dict) else None
    if isinstance(series, str) and series.endswith(".supply_c"):
        return series.removesuffix(".supply_c")
    return None


def group_key(ev: Event) -> str:
    """The topology key an event belongs under, by what kind of trouble it is:

    - heat groups under the cooling unit (a unit's degradation explains the heat of every GPU it cools);
    - network trouble under the link (a slow link explains the stragglers of every job crossing it);
    - power capping under the node; a straggler under whatever its culprit is (link or GPU's node);
    - hardware faults (XID, a broken sensor) stay with their GPU.
    """
    d = ev.data
    node = d.get("node")
    if ev.kind in ("cooling_degraded", "cooling_recovered"):
        return f"unit:{ev.subject}"
    if ev.kind in THERMAL:
        unit = d.get("unit")
        unit = unit if isinstance(unit, str) else lead_unit(ev)
        return f"unit:{unit}" if unit else f"node:{node or ev.subject}"
    if ev.kind in ("network_bottleneck", "link_degraded"):
        return f"link:{ev.subject}"
    if ev.kind == "straggler":
        culprit = d.get("culprit")
        if d.get("culprit_kind") == "link" and isinstance(culprit, str):
            return f"link:{culprit}"
        if isinstance(culprit, str) and "/gpu" in culprit:
            return f"node:{culprit.split('/')[0]}"
        return f"subject:{ev.subject}"
    if ev.kind in POWER and isinstance(node, str):
        return f"node:{node}"
    if ev.kind in PER_GPU:
        return f"gpu:{ev.subject}"
    return f"node:{node}" if isinstance(node, str) else f"subject:{ev.subject}"


class IncidentBook:
    """Open incidents by key; pure and serialisable (``dump``/``load``) so the agent can resume."""

    def __init__(self, window_s: float = 900.0) -> None:
        self.window_s = window_s
        self.open: dict[str, Incident] = {}
        self.node_unit: dict[str, str] = {}  # learned from events that name both

    def find(self, incident_id: str) -> Incident | None:
        """An open incident by id."""
        return next((i for i in self.open.values() if i.incident_id == incident_id), None)

    def _explained_by(self, ev: Event) -> str | None:
        """An open cooling incident that explains this event: a thermal clock drop on a GPU it cools, or a
        straggler whose culprit GPU it cools (the heat spread into the job)."""
        if ev.kind == "clock_drop" and ev.data.get("reason") == "thermal":
            node = ev.data.get("node")
        elif ev.kind == "straggler" and ev.data.get("culprit_kind") == "gpu":
            node = str(ev.data.get("culprit", "")).split("/")[0]
        else:
            return None
        unit = self.node_unit.get(str(node))
        key = f"unit:{unit}"
        return key if unit and key in self.open else None

    def _alert_key(self, ev: Event) -> str | None:
        """Where an alert goes: a resolved one to the incident it fired in; a firing one to the open incident of its
        GPU, else of its node's cooling unit, else of its node, else under the key its node's thermal events will
        use (its unit's when known, else its node's), so the twin's events that follow join it."""
        if ev.kind == "alert_resolved":
            return next((k for k, inc in self.open.items() if hot_name(ev) in inc.hot), None)
        node, gpu = ev.data.get("node"), ev.data.get("gpu")
        if ev.kind != "alert_firing" or not isinstance(node, str):
            return None
        unit = self.node_unit.get(node)
        keys = [f"gpu:{gpu}"] if isinstance(gpu, str) else []
        keys += [f"unit:{unit}"] if unit else []
        keys.append(f"node:{node}")
        return next((k for k in keys if k in self.open), f"unit:{unit}" if unit else f"node:{node}")

    def _adopt(self, key: str, ev: Event) -> Incident | None:
        """An open incident that alerts alone opened on this event's node, moved under this event's key: the
        twin's measurements that follow an alert join it (within the window) instead of opening another."""
        node = ev.data.get("node")
        inc = self.open.get(f"node:{node}") if isinstance(node, str) else None
        if inc is None or inc.key == key or set(inc.kinds) - ALERTS or ev.ts - inc.last_ts > self.window_s:
            return None
        del self.open[inc.key]
        inc.key = key
        self.open[key] = inc
        return inc

    def observe(self, ev: Event) -> tuple[Incident | None, bool]:
        """Fold one event in. Returns the incident it touched and whether that incident now needs a
        (new) proposal: it has impact and its root cause is new."""
        if ev.kind in FEEDBACK:
            return None, False
        node, unit = ev.data.get("node"), ev.data.get("unit")
        unit = unit if isinstance(unit, str) else lead_unit(ev)  # a measured lead is evidence of who cools it
        if isinstance(node, str) and isinstance(unit, str):
            self.node_unit[node] = unit
        key = self._explained_by(ev) or self._alert_key(ev) or group_key(ev)
        inc = self.open.get(key)
        if inc is not None and ev.ts - inc.last_ts > self.window_s:
            inc.status = "closed"
            del self.open[key]
            inc = None
        if inc is None and ev.kind not in ALERTS | RECOVERY:
            inc = self._adopt(key, ev)
        if inc is None:
            if ev.kind in RECOVERY:
                return None, False
            digest = hashlib.sha256(f"{key}|{ev.event_id}".encode()).hexdigest()[:12]
            inc = Incident(
                incident_id=f"inc-{digest}", key=key, opened_ts=ev.ts, last_ts=ev.ts,
                root_cause=RootCause(kind=ev.kind, subject=ev.subject, why=_why(ev)),
                root_event=ev.model_dump(mode="json"),
            )
            self.open[key] = inc
        if ev.event_id in inc.event_ids:
            return inc, False  # at-least-once delivery: seen already
        had_impact = bool(inc.hot)
        inc.event_ids.append(ev.event_id)
        inc.last_ts = max(inc.last_ts, ev.ts)
        inc.kinds[ev.kind] = inc.kinds.get(ev.kind, 0) + 1
        if ev.subject not in inc.subjects:
            inc.subjects.append(ev.subject)
        mark = hot_name(ev)
        if ev.kind in RECOVERY:
            if mark in inc.hot:
                inc.hot.remove(mark)
            if not inc.hot:
                inc.status = "resolved"
                del self.open[key]
            return inc, False
        if ev.kind in IMPACT and mark not in inc.hot:
            inc.hot.append(mark)
        cause_changed = CAUSE_RANK.get(ev.kind, 0) > CAUSE_RANK.get(inc.root_cause.kind, 0)
        if cause_changed:
            why = f"{_why(ev)}; it ranks above {inc.root_cause.kind} on {inc.root_cause.subject} as a cause"
            inc.root_cause = RootCause(kind=ev.kind, subject=ev.subject, why=why)
            inc.root_event = ev.model_dump(mode="json")
        self._update_facts(inc, ev)
        self._cite_leads(inc, ev)
        needs = bool(inc.hot) and (cause_changed and had_impact or not had_impact)
        if needs:
            inc.revision += 1
        return inc, needs

    @staticmethod
    def _update_facts(inc: Incident, ev: Event) -> None:
        f = inc.facts
        d = ev.data
        for k in ("unit", "node", "setpoint_c", "supply_c", "fan_pct", "flow_frac", "max_operating_c", "slowdown_c",
                  "shutdown_c", "model", "link", "job", "xid", "resolution", "culprit"):
            if d.get(k) is not None and (k not in f or ev.kind == "cooling_degraded"):
                f[k] = d[k]
        if ev.kind in ("network_bottleneck", "link_degraded"):
            f["link"] = ev.subject
            jobs = d.get("jobs")
            if isinstance(jobs, list) and jobs:
                f.setdefault("job", jobs[0])
        if ev.kind == "straggler":
            f.setdefault("job", d.get("job", ev.subject))
        if ev.kind in ("xid_error", "sensor_fault", "power_capped", "clock_drop"):
            f.setdefault("gpu", d.get("gpu", ev.subject))
        proj = d.get("projected_c")
        if isinstance(proj, int | float) and proj >= f.get("peak_projected_c", float("-inf")):
            f["peak_projected_c"] = proj
            f["gpu"] = d.get("gpu", ev.subject)
            for k in ("power_w", "clock_mhz", "est_c", "sensed_c", "model"):
                f[k] = d.get(k)

    @staticmethod
    def _cite_leads(inc: Incident, ev: Event) -> None:
        """Keep each GPU's best-fitting measured lead (highest r; the first of equals), and let a cooling root
        cause cite the leads of its own supply."""
        lead = ev.data.get("lead")
        kept = inc.leads.get(ev.subject)
        measured = isinstance(lead, dict) and all(isinstance(lead.get(k), int | float) for k in ("lag_s", "r"))
        if measured and ev.kind in THERMAL and (kept is None or float(lead["r"]) > float(kept["r"])):  # type: ignore[index]
            inc.leads[ev.subject] = dict(lead)  # type: ignore[arg-type]
        rc = inc.root_cause
        if rc.kind != "cooling_degraded":
            return
        series = f"{rc.subject}.supply_c"
        mine = [v for v in inc.leads.values() if v.get("series") == series]
        if not mine:
            return
        lags = [float(v["lag_s"]) for v in mine]
        rs = [float(v["r"]) for v in mine]
        ps = [float(v["p"]) for v in mine if isinstance(v.get("p"), int | float)]
        summary = {"series": series, "gpus": len(mine), "lag_s_min": min(lags), "lag_s_max": max(lags),
                   "r_min": min(rs), "p_max": max(ps) if len(ps) == len(mine) else None}
        if inc.facts.get("lead") == summary:
            return
        inc.facts["lead"] = summary
        why = f"{rc.why.split(MEASURED)[0]}{MEASURED}{lead_sentence(summary)}"
        inc.root_cause = rc.model_copy(update={"why": why})

    def dump(self) -> dict[str, Any]:
        return {"open": {k: v.model_dump(mode="json") for k, v in self.open.items()}, "node_unit": self.node_unit}

    def load(self, data: dict[str, Any]) -> None:
        self.open = {k: Incident.model_validate(v) for k, v in data.get("open", {}).items()}
        self.node_unit = dict(data.get("node_unit", {}))


def lead_sentence(summary: dict[str, Any]) -> str:
    """The measured lead in an operator's words, e.g. "cu01's supply temperature leads the temperatures of 7
    of its GPUs by 17–29 s (their changes: r ≥ 0.40, p ≤ 0.009)": ``r`` of the smoothed changes, and the
    largest chance probability among the GPUs (after the lags tried), which is what certifies the lead."""
    unit = str(summary["series"]).removesuffix(".supply_c")
    lo, hi, n = summary["lag_s_min"], summary["lag_s_max"], summary["gpus"]
    lag = f"{lo:g} s" if lo == hi else f"{lo:g}–{hi:g} s"
    gpus = "one of its GPUs" if n == 1 else f"{n} of its GPUs"
    p = summary.get("p_max")
    chance = f", p ≤ {math.ceil(max(p, 1e-3) * 1000) / 1000:.3f}" if isinstance(p, int | float) else ""  # rounded up
    return (f"{unit}'s supply temperature leads the temperature{'s' if n > 1 else ''} of {gpus} by {lag} "
            f"(their changes: r ≥ {summary['r_min']:.2f}{chance})")


def hot_name(ev: Event) -> str:
    """What an event marks affected (or recovered): its subject; for an alert also the alert's name, so two alerts
    on one node resolve one by one."""
    name = ev.data.get("alertname")
    return f"{ev.subject} ({name})" if ev.kind in ALERTS and isinstance(name, str) else ev.subject


def _why(ev: Event) -> str:
    """Why this event is the root cause, in an operator's words."""
    if ev.kind == "alert_firing":
        summary = ev.data.get("summary")
        return (f"the monitoring alert {ev.data.get('alertname')} fires on {ev.subject}"
                + (f" ({summary})" if summary else "") + "; no measurement of the twin explains it yet")
    if ev.kind == "cooling_degraded":
        d = ev.data
        flow, supply, setpoint = d.get("flow_frac"), d.get("supply_c"), d.get("setpoint_c")
        parts = []
        if isinstance(flow, int | float) and flow < 1.0:
            parts.append(f"lost coolant flow to {d.get('node')} (flow {flow} of nominal, supply {supply} °C)")
        if isinstance(supply, int | float) and isinstance(setpoint, int | float) and supply > setpoint:
            parts.append(f"cannot hold its supply temperature ({supply} °C against a {setpoint} °C setpoint)")
        normal = d.get("normal_c")
        if not parts and isinstance(supply, int | float) and isinstance(normal, int | float) and supply > normal:
            parts.append(f"has drifted to a supply of {supply} °C, {supply - normal:.1f} °C above its normal "
                         f"{normal:.1f} °C")
        what = " and ".join(parts) or f"is degraded (fans at {d.get('fan_pct')} %, supply {supply} °C)"
        return f"cooling unit {ev.subject} {what}; it cools every GPU grouped in this incident"
    return f"{ev.kind} on {ev.subject} is the strongest cause seen in this group"
