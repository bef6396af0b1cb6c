"""How a twin event becomes a retrieval query, and which events are emergencies."""

from __future__ import annotations

from collections.abc import Mapping

#: Plain words for each twin event kind, as runbooks describe the condition.
EVENT_WORDS: dict[str, str] = {
    "thermal_slowdown_predicted": "GPU temperature rising, thermal slowdown predicted soon, cooling",
    "thermal_slowdown": "GPU thermal slowdown, clocks throttled by temperature, cooling",
    "gpu_overheat": "GPU overheating, temperature near shutdown, thermal runaway",
    "power_capped": "GPU power capped, power limit reached, power brake",
    "clock_drop": "GPU SM clock drop, clocks throttled",
    "xid_error": "GPU error reported by the driver",
    "network_bottleneck": "network bottleneck, InfiniBand link congestion, low bandwidth",
    "link_degraded": "link errors, symbol errors, link flapping, link trained at reduced width or speed, transceiver",
    "straggler": "straggler, slow rank holding the job barrier",
    "sensor_fault": "sensor fault, implausible or stuck sensor reading",
    "cooling_degraded": "cooling degraded, coolant flow loss, cooling unit CDU",
    "coolant_leak": "coolant leak, leak detection alarm, liquid in a liquid-cooled rack, leak detector",
    "kv_cache_pressure": "LLM serving KV cache pressure, GPU memory full, preemption",
    "llm_queue_backlog": "LLM serving request queue backlog, latency rising",
}

#: Event kinds that call for an emergency operating procedure first.
EMERGENCY_EVENTS = frozenset({"gpu_overheat", "thermal_slowdown", "thermal_slowdown_predicted", "cooling_degraded",
                              "coolant_leak"})
#: XID codes that mean hardware trouble, not an application fault.
SEVERE_XIDS = frozenset({48, 74, 79, 94, 95})
#: What the common XID codes mean, in the words manuals use (NVIDIA's XID catalogue).
XID_MEANING: dict[int, str] = {
    13: "graphics engine exception, application fault",
    31: "GPU memory page fault, application fault",
    43: "GPU stopped processing, application fault",
    48: "double-bit ECC error, uncorrectable memory error",
    63: "ECC page retirement, row remapping",
    64: "row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
}
_FACT_KEYS = ("xid", "code", "unit", "component", "metric", "reason", "cause", "link", "sensor", "severity")


def _xid(data: Mapping[str, object]) -> int | None:
    for key in ("xid", "code", "xid_code"):
        value = data.get(key)
        try:
            return int(str(value)) if value is not None else None
        except ValueError:
            continue
    return None


def is_emergency(kind: str, data: Mapping[str, object]) -> bool:
    """Whether an event needs an EOP first: thermal and cooling events, severe XIDs, critical severity."""
    if kind in EMERGENCY_EVENTS or str(data.get("severity", "")).lower() == "critical":
        return True
    xid = _xid(data)
    return kind == "xid_error" and xid is not None and xid in SEVERE_XIDS


def event_query(kind: str, subject: str, data: Mapping[str, object]) -> str:
    """A free-text query for an event: its kind in words, the subject and the telling facts."""
    parts = [kind, EVENT_WORDS.get(kind, kind.replace("_", " ")), subject]
    xid = _xid(data)
    if xid is not None:
        # The code is the most telling fact: say it twice (BM25 counts repeated query terms) and in words.
        parts += [f"XID {xid}", f"XID {xid}", XID_MEANING.get(xid, "")]
    for key in _FACT_KEYS:
        value = data.get(key)
        if isinstance(value, str | int | float) and key not in ("xid", "code"):
            parts.append(str(value))
    return " ".join(p for p in parts if p)
