"""Alerts of the operator's own monitoring as twin events: ``alert_firing`` and ``alert_resolved``.

The twin is the only writer of the event log, so an Alertmanager alert enters it like any telemetry: the receiver
(``serving.alerts``) stores it, ``cluster.telemetry.alerts.AlertSource`` reads it as an :class:`AlertSample`, and
the fleet-level model folds it here (in the sharded twin the coordinator's fleet model: it names no shard's GPUs).

Alertmanager repeats itself: every notification of a group carries all the group's alerts again, and a firing
alert is re-sent every ``repeat_interval``. An alert's identity is its fingerprint, ``startsAt`` and status: the
first sample of an identity is an event, the rest are not (:class:`AlertTracker` remembers the last
:data:`SEEN_MAX` identities, in the twin's checkpoint). The event's id and time come from that identity and the
alert's own time (``startsAt`` when it fires, ``endsAt`` when it resolves), never from when it was received, so
even a re-send the tracker has forgotten is the same event, with the same id.
"""

from __future__ import annotations

from typing import Any

from actors.twin.events import Event, Severity
from actors.twin.state import strs
from cluster.telemetry.samples import AlertSample

#: Identities remembered (the oldest forgotten first); far more than the alerts one fleet has open at once.
SEEN_MAX = 4096
#: The alert's severity label → the event's severity while it fires (anything else: warning).
SEVERITY: dict[str, Severity] = {"critical": "critical", "page": "critical", "error": "critical",
                                 "warning": "warning", "info": "info", "none": "info"}


def alert_event(s: AlertSample) -> Event:
    """The event of one alert sample, on the GPU or node its labels name (else on the alert's name)."""
    firing = s.status == "firing"
    kind = "alert_firing" if firing else "alert_resolved"
    severity: Severity = SEVERITY.get(s.severity or "", "warning") if firing else "info"
    ts = s.starts_at if firing else (s.ends_at if s.ends_at is not None else s.ts)
    data: dict[str, Any] = {
        "alertname": s.alertname, "status": s.status, "alert_severity": s.severity, "node": s.node,
        "gpu": s.subject if s.gpu is not None and s.node is not None else None, "fingerprint": s.fingerprint,
        "starts_at": s.starts_at, "ends_at": s.ends_at, "received_at": s.ts, "summary": s.summary,
        "labels": dict(sorted(s.labels.items())),
    }
    return Event.make(kind, s.subject, max(ts, 0.0), severity, data, key=f"{s.fingerprint}|{s.starts_at:.6f}")


def identity(s: AlertSample) -> str:
    """What makes two samples the same alert notification: fingerprint, start and status."""
    return f"{s.fingerprint}|{s.starts_at:.6f}|{s.status}"


class AlertTracker:
    """Which alert notifications became events already (bounded, oldest forgotten first); pure, state as data."""

    def __init__(self, seen: list[str] | None = None, limit: int = SEEN_MAX) -> None:
        self.limit = limit
        self.seen: dict[str, None] = dict.fromkeys((seen or [])[-limit:])  # insertion-ordered

    def ingest(self, s: AlertSample) -> list[Event]:
        """The event of ``s``, or none when this notification was seen already."""
        key = identity(s)
        if key in self.seen:
            return []
        self.seen[key] = None
        while len(self.seen) > self.limit:
            del self.seen[next(iter(self.seen))]
        return [alert_event(s)]

    def to_state(self) -> list[str]:
        return list(self.seen)

    @classmethod
    def from_state(cls, rows: Any) -> AlertTracker:
        return cls(strs(rows, "alerts seen"))
