"""vLLM engine metrics as telemetry: each replica's Prometheus page becomes one ``LlmEngineSample``.

A reader fetches the pages, each naming its deployment and replica: :class:`ServeReplicasReader` asks every
running replica of opsloop's vLLM deployment (a Ray Serve handle's ``broadcast`` of
``OpsloopLLMServer.metrics_page``), :class:`HttpMetricsReader` a vLLM OpenAI server's ``/metrics`` (the URL's
``host:port`` names the replica). :func:`parse_engine_metrics` reads a page with ``prometheus_client.parser``
(through :func:`cluster.telemetry.dcgm.metric_samples`): within one replica the engines' counters (label
``engine``, data-parallel ranks) are summed and the fullest KV cache is kept; replicas stay apart, one sample
each, so the twin takes every replica's rates from that replica's own counters.

:class:`VllmSource` is the ``TelemetrySource``: at most one read every ``every_s`` (wall clock), samples stamped
with the fleet's clock (``clock``: the simulator's time, or Unix time for a real fleet) and validated like
every other source. The twin (:mod:`actors.twin.llm_engine`) turns them into ``kv_cache_pressure`` and
``llm_queue_backlog`` events; this module writes nothing anywhere.

Bad input never stops the source: a page that is not Prometheus text, or carries no ``vllm:*`` metric, gives
no sample; why is kept in ``errors`` (per replica) and the page is counted in the validator (source ``vllm``,
reason ``bad_page``, which the twin's metrics report). The other replicas' samples go on. A read that fails
(the deployment not up yet, a timeout) is kept in ``errors["read"]`` and tried again next interval.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from cluster.telemetry.dcgm import metric_samples
from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import Sample

log = logging.getLogger("opsloop.telemetry.vllm")

SOURCE = "vllm"
#: The key in ``VllmSource.errors`` of a read that failed as a whole.
READ = "read"
READ_TIMEOUT_S = 3.0
#: Quarantine entries kept for inspection (the validator's counters keep the totals).
MAX_KEPT = 1000
#: vLLM metric name → sample field; counters end in ``_total``, the TTFT histogram gives ``_sum``/``_count``.
METRICS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",  # its name before vLLM v1
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_preemptions_total": "preemptions_total",
    "vllm:generation_tokens_total": "generation_tokens_total",
    "vllm:prompt_tokens_total": "prompt_tokens_total",
    "vllm:time_to_first_token_seconds_sum": "ttft_sum_s",
    "vllm:time_to_first_token_seconds_count": "ttft_count",
}


class PageError(ValueError):
    """A metrics page that gives no engine reading (the message says why)."""


def parse_engine_metrics(text: str, bad_lines: list[str] | None = None) -> dict[str, float]:
    """One replica's Prometheus text → the ``LlmEngineSample`` fields it carries (no ts, no names).

    ``kv_cache_usage`` is the fullest engine's; every other field is summed over the replica's engines and
    label sets. A NaN or infinite value stays NaN (the validator refuses the sample, reason ``nan``). Lines that
    are not in the exposition format are skipped and appended to ``bad_lines``.

    Raises:
        PageError: no ``vllm:*`` metric could be read from the page.
    """
    bad: list[str] = [] if bad_lines is None else bad_lines
    values: dict[str, float] = {}
    for sample in metric_samples(text, bad):
        key = METRICS.get(sample.name)
        if key is None:
            continue
        v, had = float(sample.value), values.get(key, 0.0)
        if not (math.isfinite(v) and math.isfinite(had)):
            values[key] = math.nan
        else:
            values[key] = max(had, v) if key == "kv_cache_usage" else had + v
    if not values:
        if bad:
            raise PageError(f"not a Prometheus metrics page: {len(bad)} lines unreadable, first {bad[0][:120]!r}")
        raise PageError("no vllm:* engine metrics on the page")
    return values


@dataclass(frozen=True)
class MetricsPage:
    """One replica's metrics page, or why it could not be read (``error``)."""

    deployment: str
    replica: str
    text: str = ""
    error: str = ""


class MetricsReader(Protocol):
    """Fetches the engines' metrics pages, one per replica it reached."""

    async def read(self) -> list[MetricsPage]:
        """The pages (a replica that did not answer: a page with ``error``); raises when none can be read."""
        ...


class ServeReplicasReader:
    """Every running replica of a Serve app's ingress deployment (opsloop's vLLM app), through ``broadcast``.

    Each replica answers ``method`` (``OpsloopLLMServer.metrics_page``) with ``{"deployment", "replica",
    "text"}``. The handle is looked up where the reader runs, on the first read that finds the app.
    """

    def __init__(self, app: str, method: str = "metrics_page", timeout_s: float = READ_TIMEOUT_S) -> None:
        self.app, self.method, self.timeout_s = app, method, timeout_s
        self._handle: Any = None

    def __getstate__(self) -> dict:
        """Picklable into an actor: the handle is looked up again where the reader runs."""
        return {**self.__dict__, "_handle": None}

    async def read(self) -> list[MetricsPage]:
        if self._handle is None:
            from ray import serve

            # It asks the Serve controller with a blocking ray.get: off the event loop.
            self._handle = await asyncio.to_thread(serve.get_app_handle, self.app)
        try:
            answers = await self._handle.broadcast(self.method).results_async(
                timeout_s=self.timeout_s, return_exceptions=True)
        except Exception:
            self._handle = None  # looked up afresh next time (the app may have been deployed again)
            raise
        pages = []
        for k, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                pages.append(MetricsPage(self.app, f"?{k}", error=f"{type(answer).__name__}: {answer}"[:300]))
            elif isinstance(answer, dict) and all(isinstance(answer.get(f), str) for f in ("deployment", "replica",
                                                                                             "text")):
                pages.append(MetricsPage(answer["deployment"] or self.app, answer["replica"] or f"?{k}",
                                         answer["text"]))
            else:
                pages.append(MetricsPage(self.app, f"?{k}", error=f"not a metrics page: {str(answer)[:120]!r}"))
        return pages


class HttpMetricsReader:
    """vLLM OpenAI servers' ``/metrics`` pages: one replica per URL, named by the URL's ``host:port``."""

    def __init__(self, urls: list[str], deployment: str, timeout_s: float = READ_TIMEOUT_S) -> None:
        for url in urls:
            if httpx.URL(url).scheme not in ("http", "https"):
                raise ValueError(f"not an http(s) URL of a vLLM server's metrics: {url!r}")
        self.urls, self.deployment, self.timeout_s = list(urls), deployment, timeout_s

    async def read(self) -> list[MetricsPage]:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            got = await asyncio.gather(*(client.get(u) for u in self.urls), return_exceptions=True)
        pages = []
        for url, resp in zip(self.urls, got, strict=True):
            replica = httpx.URL(url).netloc.decode() or url
            if isinstance(resp, BaseException):
                pages.append(MetricsPage(self.deployment, replica, error=f"{type(resp).__name__}: {resp}"[:300]))
            elif resp.status_code != 200:
                pages.append(MetricsPage(self.deployment, replica, error=f"HTTP {resp.status_code} from {url}"))
            else:
                pages.append(MetricsPage(self.deployment, replica, resp.text))
        return pages


class PortClock:
    """The time a port's async ``now()`` says (the simulator actor's): LLM samples on the simulated fleet's clock."""

    def __init__(self, port: Any) -> None:
        self.port = port

    async def __call__(self) -> float:
        return float(await self.port.now())


async def _now(clock: Callable[[], Any]) -> float:
    got = clock()
    return float(await got if inspect.isawaitable(got) else got)


class VllmSource:
    """``TelemetrySource`` of vLLM engine samples, one per replica per read.

    Args:
        reader: Where the pages come from (:class:`ServeReplicasReader`, :class:`HttpMetricsReader`).
        clock: The fleet's time in seconds, sync or async (the simulator's ``now``; ``time.time`` for a real
            fleet): samples sit on the same time line as the rest of the twin's input.
        every_s: Wall-clock seconds between reads; a ``read`` before then returns nothing.
        timeout_s: Bound on one read of the pages, and on one reading of the clock.
        validator: Shared validator (its counters are the source's data-quality report).
        wall: The wall clock pacing the reads (monotonic).
    """

    name = SOURCE

    def __init__(self, reader: MetricsReader, clock: Callable[[], Any] = time.time, every_s: float = 5.0,
                 timeout_s: float = READ_TIMEOUT_S, validator: Validator | None = None,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.reader, self.clock, self.every_s, self.timeout_s = reader, clock, every_s, timeout_s
        self.validator = validator or Validator()
        self.wall = wall
        self.quarantined: list[Quarantined] = []
        self.errors: dict[str, str] = {}  # "deployment/replica" (or READ) → why its last page gave no sample
        self.skipped_lines: Counter[str] = Counter()  # per replica: lines of its pages that were not Prometheus text
        self.reads = 0
        self._n = 0
        self._next = -math.inf

    async def read(self) -> list[Sample]:
        """One sample per replica that answered, when a read is due; never raises (see ``errors``)."""
        now = self.wall()
        if now < self._next:
            return []
        self._next = now + self.every_s
        try:
            pages = await asyncio.wait_for(self.reader.read(), self.timeout_s)
            ts = round(await asyncio.wait_for(_now(self.clock), self.timeout_s), 3)
        except Exception as exc:  # noqa: BLE001 - the engine may be starting or gone; the fleet's telemetry goes on
            self.errors[READ] = f"{type(exc).__name__}: {exc}"[:300]
            log.debug("reading the vLLM engine metrics failed", exc_info=True)
            return []
        self.errors.pop(READ, None)
        self.reads += 1
        out: list[Sample] = []
        for page in sorted(pages, key=lambda p: (p.deployment, p.replica)):
            got = self._sample(page, ts)
            if got is not None:
                out.append(got)
        return out

    def _sample(self, page: MetricsPage, ts: float) -> Sample | None:
        key = f"{page.deployment}/{page.replica}"
        if page.error:
            self.errors[key] = page.error
            return None
        bad: list[str] = []
        try:
            fields = parse_engine_metrics(page.text, bad)
        except PageError as exc:
            self.errors[key] = str(exc)
            self.validator.rejected.setdefault(SOURCE, Counter())["bad_page"] += 1
            return None
        if bad:
            self.skipped_lines[key] += len(bad)
        self._n += 1
        got = self.validator.check(SOURCE, self._n, {"kind": "llm_engine", "ts": ts, "deployment": page.deployment,
                                                     "replica": page.replica, **fields})
        if isinstance(got, Quarantined):
            self.quarantined = [*self.quarantined[-(MAX_KEPT - 1):], got]
            self.errors[key] = f"{got.reason}: {got.detail}"
            return None
        self.errors.pop(key, None)
        return got
