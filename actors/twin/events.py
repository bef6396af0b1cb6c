"""Events: what the twin concludes, appended to the event log (the spine of opsloop).

An event's id is derived from its content (kind, subject, timestamp, and for an action's result the action's
id), never from a clock or a counter, so replaying the same trace yields the same ids byte for byte, and two
distinct events never share one (two actions on one target in one instant are two events).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventKind = Literal[
    "thermal_slowdown_predicted",
    "thermal_slowdown",
    "gpu_overheat",
    "thermal_recovered",
    "power_capped",
    "clock_drop",
    "xid_error",
    "network_bottleneck",
    "link_degraded",
    "straggler",
    "sensor_fault",
    "gpu_model_unknown",
    "cooling_degraded",
    "cooling_recovered",
    "action_executed",
    "action_failed",
    "action_rejected",
    "kv_cache_pressure",
    "llm_queue_backlog",
    "alert_firing",
    "alert_resolved",
    "telemetry_lost",
    "telemetry_restored",
    "coolant_leak",
]
Severity = Literal["info", "warning", "critical"]
Scalar = str | int | float | bool | None


class Event(BaseModel):
    """One deterministic conclusion of the twin about one subject (a GPU, node, unit, link or job)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    ts: float
    kind: EventKind
    subject: str
    severity: Severity
    # A nested mapping holds one measurement's fields together (e.g. ``lead``: series, lag_s, r, n).
    data: dict[str, Scalar | list[Scalar] | dict[str, Scalar]] = Field(default_factory=dict)
    traceparent: str | None = None

    @classmethod
    def make(
        cls, kind: EventKind, subject: str, ts: float, severity: Severity, data: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> Event:
        """Build an event whose id is a hash of what it says (``key`` tells apart events that share kind, subject
        and instant, e.g. the results of two actions on one target)."""
        data = {k: ({kk: _round(vv) for kk, vv in v.items()} if isinstance(v, dict) else _round(v))
                for k, v in (data or {}).items()}
        ts = round(ts, 3)
        said = f"{kind}|{subject}|{ts:.3f}" + (f"|{key}" if key is not None else "")
        digest = hashlib.sha256(said.encode()).hexdigest()[:16]
        return cls(event_id=f"ev-{digest}", ts=ts, kind=kind, subject=subject, severity=severity, data=data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): two equal events serialise to the same bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _round(v: Any) -> Any:
    """Floats to 3 decimals: the bytes of an event must not depend on the last bits of a computation."""
    return round(v, 3) if isinstance(v, float) else v
