"""Tracing for the actor shells: one OpenTelemetry trace per incident, from the sample to the observed outcome.

Only the OpenTelemetry *API* is used here, so every call is a no-op until a process installs a tracer provider
(``cluster.tracing.setup_tracing``, run in every Ray process by ``ray_tracing_hook``). The trace crosses
processes in the messages themselves: the ``traceparent`` (W3C Trace Context) of the stage that made a message
rides in it (``Event``, ``Proposal``, ``Approval``, ``ActionResult``) and the next stage continues it.

Stages, in the order an incident goes through them (``opsloop.stage`` on every span):
``sample → event → incident → retrieval → llm → proposal → approval → action → feedback → outcome``.

The twin's spans take ids derived from the event id (``seed``; see ``cluster.tracing.SeededIdGenerator``), so a
replayed trace writes the same events byte for byte with tracing on.

Spans are also written as JSON Lines (``span_record``, one object a line) and read back for the dashboard's
incident timeline (``incident_timeline``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "opsloop"
STAGES = ("sample", "event", "incident", "retrieval", "llm", "proposal", "approval", "action", "feedback", "outcome")
#: Context key the id generator reads: spans started under it get ids derived from its value.
SEED_KEY = "opsloop.id_seed"
_PROPAGATOR = TraceContextTextMapPropagator()
Attr = str | int | float | bool


def parent_context(traceparent: str | None) -> otel_context.Context | None:
    """The context a ``traceparent`` header names (None when there is none or it does not parse)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C ``traceparent`` of a span (None for a no-op span: tracing is off)."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextmanager
def stage_span(
    stage: str, name: str, service: str, *, parent: str | None = None, continue_current: bool = False,
    seed: str | None = None, attrs: Mapping[str, Attr | None] | None = None, start_ns: int | None = None,
    links: tuple[str | None, ...] = (),
) -> Iterator[trace.Span]:
    """A span of one loop stage, current inside the block.

    Args:
        stage: one of ``STAGES`` (``opsloop.stage``).
        name: the span name (``twin.event``, ``agent.proposal`` ...).
        service: the process's role (``twin``, ``agent``, ``gateway``, ``ingress``).
        parent: the upstream message's traceparent; None starts a new trace unless ``continue_current``.
        continue_current: make the span a child of the current span (inside another stage's block).
        seed: derive the span's (and a root span's trace) ids from this string: replays give the same ids.
        attrs: span attributes (None values are left out); ids use ``opsloop.<name>_id`` keys.
        start_ns: when the stage began, if before this call (epoch nanoseconds).
        links: traceparents of related spans (the event that made an incident need a new proposal).
    """
    ctx = parent_context(parent)
    if ctx is None and not continue_current:
        ctx = otel_context.Context()  # a new root, never a child of whatever Ray made current
    attributes = {k: v for k, v in (attrs or {}).items() if v is not None}
    attributes.update({"opsloop.stage": stage, "opsloop.service": service})
    link_list = [trace.Link(c) for c in (_span_context(p) for p in links) if c is not None]
    token = otel_context.attach(otel_context.set_value(SEED_KEY, f"{seed}|{name}")) if seed else None
    try:
        span = trace.get_tracer(TRACER_NAME).start_span(name, context=ctx, attributes=attributes, links=link_list,
                                                        start_time=start_ns)
    finally:
        if token is not None:
            otel_context.detach(token)
    with trace.use_span(span, end_on_exit=True):
        yield span


def _span_context(traceparent: str | None) -> trace.SpanContext | None:
    ctx = parent_context(traceparent)
    return trace.get_current_span(ctx).get_span_context() if ctx is not None else None


# --- the JSON Lines span format ------------------------------------------------------------------------------
def span_record(span: Any) -> dict[str, Any]:
    """One finished SDK span as the JSON object the JSONL exporter writes (and ``read_spans`` reads)."""
    ctx = span.get_span_context()
    attrs = dict(span.attributes or {})
    resource = dict(getattr(span.resource, "attributes", {}) or {})
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "stage": attrs.get("opsloop.stage"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": {k: v if isinstance(v, str | int | float | bool) else list(v) for k, v in attrs.items()},
        "links": [{"trace_id": f"{lk.context.trace_id:032x}", "span_id": f"{lk.context.span_id:016x}"}
                  for lk in span.links],
        "status": span.status.status_code.name.lower(),
        "process": {"pid": os.getpid(), "name": attrs.get("opsloop.service") or resource.get("service.name")},
    }


def read_spans(directory: Path) -> Iterator[dict[str, Any]]:
    """Every span record under ``directory`` (``spans-*.jsonl``); a torn last line is skipped."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("spans-*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("trace_id"), str):
                    yield rec


def incident_timeline(directory: Path, incident_id: str) -> list[dict[str, Any]]:
    """Every span of the traces that touched ``incident_id``, in start order (the dashboard's timeline)."""
    spans = list(read_spans(directory))
    traces = {s["trace_id"] for s in spans if (s.get("attributes") or {}).get("opsloop.incident_id") == incident_id}
    return sorted((s for s in spans if s["trace_id"] in traces), key=lambda s: (s.get("start_ns") or 0, s["name"]))
