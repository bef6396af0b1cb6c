"""Redfish resources → samples: the walk over one service's tree, and the pure mapping of each resource.

:mod:`cluster.telemetry.redfish` documents what is read and how chassis and cooling units are named; this module
does it, given a ``get(path)`` coroutine that returns a resource as a dict (None when it did not answer). Pure
but for ``get``: the tests walk the fixture mockup straight from disk as well as through a real server.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from cluster.telemetry.samples import CoolingSample, FacilitySample, Sample
from policies.actions import NODE_PATTERN

ROOT = "/redfish/v1"
#: Status.State values of a detector that is not watching (its health says nothing about a leak).
NOT_WATCHING = {"Absent", "Disabled", "StandbyOffline", "StandbySpare", "UnavailableOffline", "Deferring"}
_RANK = {"OK": 0, "Warning": 1, "Critical": 2}
Getter = Callable[[str], Awaitable[dict | None]]


@dataclass(frozen=True)
class Target:
    """One Redfish service: its name (NAME, or the URL's host) and its origin."""

    name: str
    url: str
    named: bool


def parse_target(entry: str) -> Target:
    """``URL`` or ``NAME=URL`` → a target.

    Raises:
        ValueError: not an http(s) URL with a host, or a NAME that is not a host name.
    """
    name, sep, url = entry.partition("=")
    named = bool(sep) and "://" not in name
    if not named:
        name, url = "", entry
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a Redfish service URL (http(s)://host[:port], or NAME=URL): {entry!r}")
    path = parts.path.rstrip("/")
    if path not in ("", ROOT):
        raise ValueError(f"a Redfish URL is the service's origin (its root is {ROOT}), not {parts.path!r}: {entry!r}")
    name = name.strip() if named else parts.hostname
    if not re.fullmatch(NODE_PATTERN, name):
        raise ValueError(f"{name!r} is not a host name (letters, digits, '-' and '.'): {entry!r}")
    return Target(name=name, url=f"{parts.scheme}://{parts.netloc}", named=named)


def unit_base(t: Target) -> str:
    """The unit name a CDU controller's target gives (see the module's naming)."""
    base = re.sub(r"[^a-z0-9-]+", "-", t.name.lower()).strip("-")
    if not t.named or not base[:1].isalpha():
        base = f"cdu-{base}"
    return base[:32].rstrip("-")


def unit_name(base: str, cdu_id: str, count: int) -> str:
    """The unit name of cooling unit ``cdu_id`` of a service whose units' base name is ``base`` (:func:`unit_base`)
    and that has ``count`` cooling units: the base itself when it is the only one, else ``<base>-<Id>``."""
    return base if count == 1 else f"{base}-{re.sub(r'[^a-z0-9-]+', '-', cdu_id.lower())}"[:32].rstrip("-")


def number(value: Any) -> float | None:
    """A finite number, else None (a BMC's ``"Out of range"``, null, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def reading(excerpt: Any, key: str = "Reading") -> float | None:
    """``excerpt[key]`` of a sensor excerpt (``{"Reading": 23.5, "DataSourceUri": ...}``) as a number, or None."""
    return number(excerpt.get(key)) if isinstance(excerpt, dict) else None


def link(doc: Any, key: str) -> str | None:
    """The ``@odata.id`` a resource's property links to, or None."""
    ref = doc.get(key) if isinstance(doc, dict) else None
    ref = ref.get("@odata.id") if isinstance(ref, dict) else None
    return ref if isinstance(ref, str) and ref else None


def leak_state(doc: Any) -> str | None:
    """A leak detector's state: the worse of ``DetectorState`` and ``Status.Health``; None when not watching."""
    if not isinstance(doc, dict):
        return None
    status = doc.get("Status") if isinstance(doc.get("Status"), dict) else {}
    if status.get("State") in NOT_WATCHING:
        return None
    ranks = [_RANK[w] for w in (doc.get("DetectorState"), status.get("Health")) if w in _RANK]
    return ("OK", "Warning", "Critical")[max(ranks)] if ranks else None


def temperatures(metrics: Any) -> dict[str, float]:
    """``ThermalMetrics``: the summary (Ambient, Intake, ...) and each reading, by DeviceName (or its URI's tail)."""
    out: dict[str, float] = {}
    if not isinstance(metrics, dict):
        return out
    summary = metrics.get("TemperatureSummaryCelsius")
    for key, excerpt in (summary.items() if isinstance(summary, dict) else ()):
        if (v := reading(excerpt)) is not None:
            out[key] = v
    rows = metrics.get("TemperatureReadingsCelsius")
    for i, row in enumerate(rows if isinstance(rows, list) else ()):
        if not isinstance(row, dict) or (v := reading(row)) is None:
            continue
        uri = row.get("DataSourceUri")
        name = row.get("DeviceName") or (uri.rstrip("/").rsplit("/", 1)[-1] if isinstance(uri, str) else f"T{i}")
        out[str(name)[:128]] = v
    return out


def excerpt_leaks(detection: Any) -> dict[str, str]:
    """Leak states from ``LeakDetectorGroups[].Detectors[]`` excerpts (when there is no detector collection)."""
    out: dict[str, str] = {}
    groups = detection.get("LeakDetectorGroups") if isinstance(detection, dict) else None
    for group in groups if isinstance(groups, list) else ():
        detectors = group.get("Detectors") if isinstance(group, dict) else None
        for i, d in enumerate(detectors if isinstance(detectors, list) else ()):
            state = leak_state(d)
            uri = d.get("DataSourceUri") if isinstance(d, dict) else None
            name = d.get("DeviceName") or (uri.rstrip("/").rsplit("/", 1)[-1] if isinstance(uri, str) else f"L{i}")
            if state is not None:
                out[str(name)[:128]] = state
    return out


async def members(get: Getter, collection: dict | None) -> list[dict]:
    """A collection's members (fetched at once; an expanded member is used as it is)."""
    refs = collection.get("Members") if isinstance(collection, dict) else None
    items = [m for m in (refs if isinstance(refs, list) else ()) if isinstance(m, dict)]
    docs = await asyncio.gather(*(_member(get, m) for m in items))
    return [d for d in docs if d is not None]


async def _member(get: Getter, m: dict) -> dict | None:
    ref = m.get("@odata.id")
    if set(m) - {"@odata.id"} or not isinstance(ref, str):
        return m
    return await get(ref)


async def follow(get: Getter, doc: Any, key: str) -> dict | None:
    """The resource ``doc[key]`` links to (None when there is no link or it did not answer)."""
    ref = link(doc, key)
    return await get(ref) if ref else None


async def leaks(get: Getter, detection: dict | None, owner: dict) -> dict[str, str]:
    """Leak detector Id → state, from a ``LeakDetection`` resource (or the owner's own ``LeakDetectors``)."""
    coll = await follow(get, detection, "LeakDetectors") or await follow(get, owner, "LeakDetectors")
    if coll is None:
        return excerpt_leaks(detection)
    out: dict[str, str] = {}
    for doc in await members(get, coll):
        if (state := leak_state(doc)) is not None:
            out[str(doc.get("Id") or doc.get("Name") or len(out))[:128]] = state
    return out


async def read_chassis(get: Getter, chassis: dict) -> dict[str, Any]:
    """One chassis → the fields of its facility sample (no owner, no time)."""
    thermal = await follow(get, chassis, "ThermalSubsystem")
    metrics, fans, detection, power, env = await asyncio.gather(
        follow(get, thermal, "ThermalMetrics"), follow(get, thermal, "Fans"), follow(get, thermal, "LeakDetection"),
        follow(get, chassis, "PowerSubsystem"), follow(get, chassis, "EnvironmentMetrics"))
    fan_docs = await members(get, fans)
    fans_pct = {str(f.get("Id"))[:128]: v for f in fan_docs if (v := reading(f.get("SpeedPercent"))) is not None}
    fans_rpm = {str(f.get("Id"))[:128]: v for f in fan_docs
                if (v := reading(f.get("SpeedPercent"), "SpeedRPM")) is not None}
    power_w = reading(env.get("PowerWatts")) if env else None
    if power_w is None and power is not None:
        psus = await members(get, await follow(get, power, "PowerSupplies"))
        inputs = [reading((m or {}).get("InputPowerWatts"))
                  for m in await asyncio.gather(*(follow(get, p, "Metrics") for p in psus))]
        power_w = sum(v for v in inputs if v is not None) if any(v is not None for v in inputs) else None
    return {"chassis": str(chassis.get("Id", ""))[:128], "temps_c": temperatures(metrics), "fans_pct": fans_pct,
            "fans_rpm": fans_rpm, "leaks": await leaks(get, detection, chassis), "power_w": power_w}


async def read_cdu(get: Getter, cdu: dict) -> dict[str, Any]:
    """One ``CoolingUnit`` → its loop readings (supply, return, setpoint, flow, rated flow) and its leak states."""
    secondary, primary, detection = await asyncio.gather(
        follow(get, cdu, "SecondaryCoolantConnectors"), follow(get, cdu, "PrimaryCoolantConnectors"),
        follow(get, cdu, "LeakDetection"))
    loops = sorted(await members(get, secondary) or await members(get, primary), key=lambda c: str(c.get("Id")))
    first = loops[0] if loops else {}
    flows = [v for c in loops if (v := reading(c.get("FlowLitersPerMinute"))) is not None]
    rated = [v for c in loops if (v := number(c.get("RatedFlowLitersPerMinute"))) is not None]
    return {"id": str(cdu.get("Id", ""))[:128], "supply_c": reading(first.get("SupplyTemperatureCelsius")),
            "return_c": reading(first.get("ReturnTemperatureCelsius")),
            "setpoint_c": reading(first.get("SupplyTemperatureControlCelsius"), "SetPoint"),
            "flow_lpm": sum(flows) if flows else None, "rated_lpm": sum(rated) if len(rated) == len(loops) and rated
            else None, "leaks": await leaks(get, detection, cdu)}


def build(cls: type[BaseModel], fields: dict[str, Any], problems: list[str]) -> Any:
    """Validate a sample; an optional reading that is out of range is left out (and recorded), the rest is kept.

    Returns None (and records why) when what is wrong is not an optional reading (a required supply temperature).
    """
    where = fields.get("chassis") or fields.get("unit") or fields.get("node")
    dropped: set[tuple] = set()
    while True:
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            errors = exc.errors()
        for e in errors:
            loc, top = tuple(e["loc"][:2]), fields.get(str(e["loc"][0])) if e["loc"] else None
            optional = cls.model_fields.get(str(loc[0])) is not None and not cls.model_fields[str(loc[0])].is_required()
            if loc in dropped or not optional or str(loc[0]) in ("ts", "kind", "node", "unit", "source"):
                problems.append(f"{where}: not a valid {cls.__name__}: {'.'.join(map(str, loc))}: {e['msg']}")
                return None
            dropped.add(loc)
            if len(loc) == 2 and isinstance(top, dict):
                fields[str(loc[0])] = {k: v for k, v in top.items() if k != loc[1]}
            else:
                fields[str(loc[0])] = cls.model_fields[str(loc[0])].get_default(call_default_factory=True)
            problems.append(f"{where}: {'.'.join(map(str, loc))} left out: {e['msg']}")


async def walk(get: Getter, root: dict, t: Target, ts: float, problems: list[str],
               serves: Mapping[str, Sequence[str]] | None = None) -> list[Sample]:
    """Everything one service says, as samples (see the module's naming); ``get`` returns None for a failure."""
    chassis_docs, cdus = await asyncio.gather(
        members(get, await follow(get, root, "Chassis")),
        members(get, await follow(get, await follow(get, root, "ThermalEquipment"), "CDUs")))
    chassis, cdu_fields = await asyncio.gather(
        asyncio.gather(*(read_chassis(get, c) for c in chassis_docs)),
        asyncio.gather(*(read_cdu(get, c) for c in cdus)))
    base = unit_base(t)
    owner = {"unit": base} if cdus else {"node": t.name}
    out: list[Sample] = []
    for fields in chassis:
        out.append(build(FacilitySample, {"ts": ts, "source": t.name, **owner, **fields}, problems))
    for c in sorted(cdu_fields, key=lambda c: c["id"]):
        unit = unit_name(base, c["id"], len(cdus))
        nodes = tuple((serves or {}).get(unit, ()))
        frac = c["flow_lpm"] / c["rated_lpm"] if c["flow_lpm"] is not None and c["rated_lpm"] else None
        if c["supply_c"] is None:
            problems.append(f"cooling unit {c['id']}: no supply temperature")
        else:
            out.append(build(CoolingSample, {
                "kind": "cooling", "ts": ts, "unit": unit, "supply_c": c["supply_c"], "return_c": c["return_c"],
                "setpoint_c": c["setpoint_c"], "serves": nodes,
                "flow_frac": {n: round(frac, 4) for n in nodes} if frac is not None and nodes else None}, problems))
        out.append(build(FacilitySample, {"ts": ts, "source": t.name, "unit": unit, "chassis": c["id"],
                                          "leaks": c["leaks"], "flow_lpm": c["flow_lpm"]}, problems))
    return [s for s in out if s is not None]
