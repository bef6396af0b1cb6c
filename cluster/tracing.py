"""OpenTelemetry set-up: one tracer provider per process, spans to OTLP or to JSON Lines in the data directory.

Every Ray process of opsloop calls :func:`setup_tracing` through :func:`ray_tracing_hook`, which Ray runs at
worker start when the cluster was started with ``ray.init(_tracing_startup_hook="cluster.tracing:ray_tracing_hook")``
(``opsloop up`` does so when ``tracing`` is on). The hook reads the settings from the environment
(``OPSLOOP_DATA_DIR``, ``OPSLOOP_OTLP_ENDPOINT``), so the driver passes them to the workers in the runtime env.

Exporters:

- ``otlp_endpoint`` set: OTLP over HTTP (package ``opentelemetry-exporter-otlp-proto-http``), every span,
  Ray's own per-call spans included.
- otherwise :class:`JsonlSpanExporter`: ``<data dir>/traces/spans-<pid>.jsonl``, one JSON object per span
  (``actors.tracing.span_record``), opsloop's stage spans only (Ray's per-call spans would drown them).

On a multi-node cluster each node writes its own files: the dashboard's timeline
(``GET /api/traces/{incident_id}``) sees the spans of the nodes that share the ingress's data directory.
Use OTLP to see all of them in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from actors.tracing import SEED_KEY, TRACER_NAME, span_record

if TYPE_CHECKING:
    from cluster.settings import Settings

log = logging.getLogger("opsloop.tracing")

HOOK = "cluster.tracing:ray_tracing_hook"
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"


class SeededIdGenerator(RandomIdGenerator):
    """Random ids, except under a seed (``actors.tracing.SEED_KEY`` in the current context): ids derived from it.

    The twin seeds its spans with the event id, so the ``traceparent`` it writes into an event is the same on
    every replay of the same trace and the event log stays deterministic byte for byte.
    """

    def _seeded(self, what: str, hex_chars: int) -> int | None:
        seed = otel_context.get_value(SEED_KEY)
        if not isinstance(seed, str):
            return None
        value = int(hashlib.sha256(f"{seed}|{what}".encode()).hexdigest()[:hex_chars], 16)
        return value or None  # an all-zero id is invalid: fall back to random

    def generate_span_id(self) -> int:
        return self._seeded("span", 16) or super().generate_span_id()

    def generate_trace_id(self) -> int:
        return self._seeded("trace", 32) or super().generate_trace_id()


class JsonlSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to ``<directory>/spans-<pid>.jsonl``.

    Args:
        directory: where the files go (created).
        scopes: instrumentation scopes to keep (None: every span).
    """

    def __init__(self, directory: Path, scopes: Sequence[str] | None = (TRACER_NAME,)) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scopes = set(scopes) if scopes is not None else None
        self._lock = threading.Lock()
        self._file = None
        self._pid = -1

    @property
    def path(self) -> Path:
        return self.directory / f"spans-{os.getpid()}.jsonl"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            scope = getattr(span.instrumentation_scope, "name", None)
            if self.scopes is None or scope in self.scopes:
                lines.append(json.dumps(span_record(span), separators=(",", ":"), default=str) + "\n")
        if not lines:
            return SpanExportResult.SUCCESS
        try:
            with self._lock:
                if self._file is None or self._pid != os.getpid():  # reopen after a fork: one file per process
                    self._file = self.path.open("a", encoding="utf-8")
                    self._pid = os.getpid()
                self._file.write("".join(lines))
                self._file.flush()
        except OSError:
            log.warning("could not write spans to %s", self.path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        from cluster.masking import redact_url

        raise RuntimeError(
            f"otlp_endpoint is set ({redact_url(endpoint)}) but {OTLP_PACKAGE} is not installed: "
            f"pip install {OTLP_PACKAGE}, "
            "or unset otlp_endpoint to write spans to <data dir>/traces/"
        ) from exc
    return OTLPSpanExporter(endpoint=endpoint)


def setup_tracing(service_name: str, data_dir: Path, otlp_endpoint: str | None = None) -> TracerProvider:
    """Install this process's tracer provider (or add the exporter to the one already installed).

    Args:
        service_name: ``service.name`` of the resource (``opsloop``; each span names its role itself).
        data_dir: opsloop's data directory; JSON Lines spans go to ``<data_dir>/traces/``.
        otlp_endpoint: an OTLP/HTTP traces endpoint; when set, spans go there instead.

    Raises:
        RuntimeError: ``otlp_endpoint`` is set but the OTLP exporter package is missing.
    """
    if otlp_endpoint:
        processor: SimpleSpanProcessor | BatchSpanProcessor = BatchSpanProcessor(_otlp_exporter(otlp_endpoint))
    else:
        processor = SimpleSpanProcessor(JsonlSpanExporter(Path(data_dir) / "traces"))
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # one global provider per process: OpenTelemetry refuses a second
        current.add_span_processor(processor)
        return current
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "process.pid": os.getpid()}),
        id_generator=SeededIdGenerator(),
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def ray_tracing_hook() -> None:
    """Ray's ``_tracing_startup_hook``: tracing for this Ray process from the settings in its environment.

    A broken configuration must not stop a Ray worker from starting: it is logged and tracing stays off.
    """
    from cluster.settings import Settings

    try:
        settings = Settings()
        setup_tracing("opsloop", settings.data_dir, settings.otlp_endpoint)
    except Exception:  # noqa: BLE001 - tracing is an aid; the worker runs without it
        log.warning("tracing is off in pid %d: could not set it up", os.getpid(), exc_info=True)


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment variables the Ray workers need so that ``ray_tracing_hook`` finds the same settings."""
    env = {"OPSLOOP_DATA_DIR": str(settings.data_dir)}
    if settings.otlp_endpoint:
        env["OPSLOOP_OTLP_ENDPOINT"] = settings.otlp_endpoint
    return env
