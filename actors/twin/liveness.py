"""Telemetry that stopped: a live source's ``SourceStatus`` sample becomes ``telemetry_lost`` or ``_restored``.

The source decides when a target is lost (N missed scrapes in a row, see
:class:`cluster.telemetry.liveness.Liveness`) and sends only the transitions, so the rule here is stateless and a
replayed trace gives the same events. The subject is what stopped answering: an exporter's ``host:port``, a BMC,
or ``node/gpuN`` for a GPU that vanished from its host's page (an XID 79 usually comes first).
"""

from __future__ import annotations

from actors.twin.events import Event
from cluster.telemetry.samples import SourceStatus


def source_status_event(s: SourceStatus) -> Event:
    """``telemetry_lost`` (warning) for a target that stopped answering, ``telemetry_restored`` (info) after."""
    data = {"source": s.source, "target": s.host, "url": s.url, "missed": s.missed}
    if s.ok:
        return Event.make("telemetry_restored", s.host, s.ts, "info", data)
    return Event.make("telemetry_lost", s.host, s.ts, "warning", {**data, "error": s.error})
