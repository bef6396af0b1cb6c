"""The twin's shell: pull samples from a telemetry source, fold them into the model, append events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from actors.metrics import Metrics
from actors.tracing import stage_span, traceparent_of
from actors.twin.eventlog import RedisEventLog
from actors.twin.events import Event
from actors.twin.model import TwinModel
from cluster.telemetry.samples import ActionResult, TelemetrySource

log = logging.getLogger("opsloop.twin")

POLL_S = 0.25
SOURCE_TIMEOUT_S = 10.0
#: Recoveries that are an executed action's observed outcome when they concern its target.
RECOVERED = ("thermal_recovered", "cooling_recovered")
MAX_ACTED = 1000


class TwinService:
    """One twin over one telemetry source (sharding across nodes comes with the barrier)."""

    def __init__(self, source: TelemetrySource, redis_url: str, namespace: str, sensor_tau_s: float = 15.0) -> None:
        self.source = source
        self.redis = aioredis.Redis.from_url(redis_url)
        self.log = RedisEventLog(self.redis, f"{namespace}:events")
        self.model = TwinModel(sensor_tau_s=sensor_tau_s)
        self.meter = Metrics()
        self.acted: dict[str, str] = {}  # action target -> its trace (outcome spans)
        self._stop = asyncio.Event()

    async def step(self) -> int:
        """Read what the source has, append the events it gives; returns the number of events."""
        started = time.time_ns()
        samples = await asyncio.wait_for(self.source.read(), SOURCE_TIMEOUT_S)
        events = self.model.ingest(samples)
        count_samples(self.meter, self.source, samples)
        await self.log.append(trace_events(events, started, self.acted))
        return len(events)

    async def run(self) -> None:
        """Loop until ``stop``; a failed read is logged and retried (the source keeps its samples)."""
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - keep the twin alive through a source hiccup
                log.exception("twin step failed; retrying")
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        self._stop.set()

    async def snapshot(self) -> dict:
        return self.model.snapshot()

    async def topology(self) -> dict[str, list[str]]:
        return self.model.topology()

    async def status(self) -> dict:
        snap = self.model.snapshot()
        return {
            "ts": snap["ts"],
            "gpus": len(snap["gpus"]),
            "nodes": snap["nodes"],
            "hot_gpus": snap["hot_gpus"],
            "max_sensed_c": snap["max_sensed_c"],
            "units": snap["units"],
            "samples_seen": snap["samples_seen"],
            "events_total": await self.log.length(),
            "events_by_kind": await self.log.counts(),
        }

    async def recent_events(self, count: int = 50) -> list[dict]:
        return [e.model_dump(mode="json") for e in await self.log.recent(count)]

    async def metrics(self) -> list[dict]:
        """Samples and quarantined records per source, events by kind (``actors.metrics`` dump)."""
        return await twin_metrics(self.meter, self.source, self.log)


# --- shared with the sharded twin (shard_service) -------------------------------------------------------------
def trace_events(events: Sequence[Event], started_ns: int, acted: dict[str, str] | None = None) -> list[Event]:
    """Open each event's trace (``sample → event``) or continue an action's; returns the events with their
    ``traceparent``. Span ids derive from the event id, so a replay writes the same bytes; with tracing off the
    events come back unchanged.

    An ``ActionResult`` fed back is the action's ``feedback`` span; a recovery of what an action targeted
    (``acted``: target → the feedback's traceparent, kept by the caller) is its observed ``outcome``.
    """
    out = []
    acted = acted if acted is not None else {}
    for ev in events:
        attrs: dict[str, str | float] = {"opsloop.event_id": ev.event_id, "opsloop.event_kind": ev.kind,
                                         "opsloop.subject": ev.subject, "opsloop.sample_ts": ev.ts}
        if ev.traceparent:  # an ActionResult re-entered as telemetry: the observed result closes the action's trace
            for key in ("approval_id", "action_id"):
                if isinstance(ev.data.get(key), str):
                    attrs[f"opsloop.{key}"] = ev.data[key]  # type: ignore[assignment]
            with stage_span("feedback", "twin.feedback", "twin", parent=ev.traceparent, seed=ev.event_id,
                            attrs=attrs, start_ns=started_ns) as span:
                tp = traceparent_of(span)
            if tp and ev.kind == "action_executed":
                acted[ev.subject] = tp
                while len(acted) > MAX_ACTED:
                    acted.pop(next(iter(acted)))
        elif ev.kind in RECOVERED and (target := _acted_on(ev, acted)):
            with stage_span("outcome", "twin.outcome", "twin", parent=acted[target], seed=ev.event_id,
                            attrs={**attrs, "opsloop.target": target}, start_ns=started_ns) as span:
                tp = traceparent_of(span)
        else:
            with stage_span("sample", "twin.sample", "twin", seed=ev.event_id, attrs=attrs, start_ns=started_ns):
                with stage_span("event", "twin.event", "twin", continue_current=True, seed=ev.event_id,
                                attrs={**attrs, "opsloop.severity": ev.severity}) as span:
                    tp = traceparent_of(span)
        out.append(ev.model_copy(update={"traceparent": tp}) if tp else ev)
    return out


def _acted_on(ev: Event, acted: dict[str, str]) -> str | None:
    for name in (ev.subject, ev.data.get("unit"), ev.data.get("node")):
        if isinstance(name, str) and name in acted:
            return name
    return None


def source_name(source: Any) -> str:
    """A telemetry source's name for metrics: its ``name``, else its first part's, else its class's."""
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    parts = getattr(source, "sources", None)
    if parts:
        return source_name(parts[0])
    return type(source).__name__.removesuffix("Source").lower() or "source"


def count_samples(metrics: Metrics, source: Any, samples: Sequence[Any]) -> None:
    """Count a read's samples by source (feedback apart from telemetry)."""
    name = source_name(source)
    feedback = sum(isinstance(s, ActionResult) for s in samples)
    if feedback:
        metrics.inc("opsloop_samples_total", feedback, source="feedback")
    if len(samples) - feedback:
        metrics.inc("opsloop_samples_total", len(samples) - feedback, source=name)


def _validators(source: Any) -> list[Any]:
    found = [source.validator] if getattr(source, "validator", None) is not None else []
    for part in getattr(source, "sources", ()) or ():
        found += _validators(part)
    return found


async def twin_metrics(metrics: Metrics, source: Any, log: RedisEventLog) -> list[dict]:
    """The twin's metrics now: quarantine counts from the sources' validators, event counts from the log."""
    metrics.clear("opsloop_samples_quarantined_total")
    for validator in _validators(source):
        for src, reasons in validator.rejected.items():
            for reason, n in reasons.items():
                metrics.set("opsloop_samples_quarantined_total", n, source=src, reason=reason)
    for kind, n in (await log.counts()).items():
        metrics.set("opsloop_events_total", n, kind=kind)
    metrics.declare("opsloop_barrier_wait_seconds")
    return metrics.dump()
