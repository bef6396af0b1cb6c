"""opsloop watches its own serving: vLLM engine metrics become the twin's *LLM facility* and events.

- :func:`parse_vllm_metrics` turns Prometheus text (a replica's registry, or a vLLM server's ``/metrics``) into
  :class:`EngineStats`;
- :class:`LLMFacilityDetector` is the pure part: rates over the interval (tokens/s, mean TTFT, preemptions)
  and edge-triggered events ``kv_cache_pressure`` and ``llm_queue_backlog``;
- :class:`LLMWatcherService` is the thin shell (a Ray actor, decorated in ``cluster/deploy.py``): read, detect,
  append to the event log with :meth:`actors.twin.eventlog.RedisEventLog.append`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from actors.twin.eventlog import RedisEventLog
from actors.twin.events import Event

log = logging.getLogger("opsloop.llm_metrics")

READ_TIMEOUT_S = 10.0
CLOCK_TIMEOUT_S = 5.0
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")
#: vLLM metric name → our field; counters end in ``_total``, histograms give ``_sum``/``_count``.
METRICS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_preemptions_total": "preemptions_total",
    "vllm:generation_tokens_total": "generation_tokens_total",
    "vllm:prompt_tokens_total": "prompt_tokens_total",
    "vllm:time_to_first_token_seconds_sum": "ttft_sum_s",
    "vllm:time_to_first_token_seconds_count": "ttft_count",
}


class EngineStats(BaseModel):
    """One reading of the engine's counters and gauges (summed over engines and labels)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float
    kv_cache_usage: float = 0.0
    running: float = 0.0
    waiting: float = 0.0
    preemptions_total: float = 0.0
    generation_tokens_total: float = 0.0
    prompt_tokens_total: float = 0.0
    ttft_sum_s: float = 0.0
    ttft_count: float = 0.0


def parse_vllm_metrics(text: str, ts: float) -> EngineStats:
    """Prometheus text → :class:`EngineStats` (``kv_cache_usage`` is the highest engine's, the rest sum)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or m["name"] not in METRICS:
            continue
        try:
            v = float(m["value"])
        except ValueError:
            continue
        key = METRICS[m["name"]]
        values[key] = max(values.get(key, 0.0), v) if key == "kv_cache_usage" else values.get(key, 0.0) + v
    return EngineStats(ts=ts, **values)


class LLMFacilityDetector:
    """Rates and events from successive :class:`EngineStats`; pure, deterministic, clock from the readings."""

    def __init__(self, subject: str, kv_pressure_at: float = 0.95, backlog_at: int = 4) -> None:
        self.subject = subject
        self.kv_pressure_at = kv_pressure_at
        self.backlog_at = backlog_at
        self.prev: EngineStats | None = None
        self.in_pressure = False
        self.in_backlog = False
        self.latest: dict[str, Any] | None = None

    def observe(self, s: EngineStats) -> list[Event]:
        """Fold one reading in; returns the events it raises (at most one of each kind per episode)."""
        p = self.prev
        dt = s.ts - p.ts if p is not None else 0.0
        preempted = max(0.0, s.preemptions_total - p.preemptions_total) if p is not None else 0.0
        tok_s = (s.generation_tokens_total - p.generation_tokens_total) / dt if p is not None and dt > 0 else 0.0
        n_ttft = s.ttft_count - p.ttft_count if p is not None else s.ttft_count
        ttft = ((s.ttft_sum_s - (p.ttft_sum_s if p else 0.0)) / n_ttft) if n_ttft > 0 else None
        self.prev = s
        self.latest = {
            "ts": s.ts, "kv_cache_usage": round(s.kv_cache_usage, 4), "running": int(s.running),
            "waiting": int(s.waiting), "preemptions": int(preempted), "tokens_per_s": round(max(tok_s, 0.0), 2),
            "ttft_s": round(ttft, 4) if ttft is not None else None,
        }
        events: list[Event] = []
        pressure = s.kv_cache_usage >= self.kv_pressure_at or preempted > 0
        if pressure and not self.in_pressure:
            sev = "critical" if preempted > 0 else "warning"
            events.append(Event.make("kv_cache_pressure", self.subject, s.ts, sev, {
                "kv_cache_usage": s.kv_cache_usage, "preemptions": int(preempted), "running": int(s.running),
                "waiting": int(s.waiting)}))
        self.in_pressure = pressure
        backlog = s.waiting >= self.backlog_at
        if backlog and not self.in_backlog:
            events.append(Event.make("llm_queue_backlog", self.subject, s.ts, "warning", {
                "waiting": int(s.waiting), "running": int(s.running), "ttft_s": self.latest["ttft_s"],
                "tokens_per_s": self.latest["tokens_per_s"]}))
        self.in_backlog = backlog
        return events


class MetricsReader(Protocol):
    async def read(self) -> str:
        """The engine's metrics in Prometheus text format."""
        ...


class ServeMetricsReader:
    """Reads ``OpsloopLLMServer.metrics_text`` through the deployment handle (one replica per call).

    Give a handle, or the deployment and app names to look the handle up where the reader runs.
    """

    def __init__(self, handle: Any = None, deployment: str | None = None, app: str | None = None) -> None:
        self.handle = handle
        self.deployment, self.app = deployment, app

    async def read(self) -> str:
        if self.handle is None:
            from ray import serve

            self.handle = serve.get_deployment_handle(self.deployment, app_name=self.app)
        return await self.handle.metrics_text.remote()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # a looked-up handle stays where it was looked up
        return (ServeMetricsReader, (None, self.deployment, self.app) if self.deployment else (self.handle,))


class HttpMetricsReader:
    """Reads a vLLM OpenAI server's ``/metrics`` endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def read(self) -> str:
        import httpx

        async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
            resp = await client.get(self.url)
            resp.raise_for_status()
            return resp.text


class LLMWatcherService:
    """The shell: every ``every_s`` read the engine, detect, append events; ``latest`` feeds the chat grounding.

    Time stamps come from the fleet clock (``clock()``, the twin's ``ts``), so LLM events sit on the same time
    line as the rest of the log.
    """

    def __init__(
        self, reader: MetricsReader, redis_url: str, namespace: str, subject: str,
        clock: Callable[[], Awaitable[float]] | None = None, every_s: float = 5.0,
        kv_pressure_at: float = 0.95, backlog_at: int = 4,
    ) -> None:
        self.reader = reader
        self.redis = aioredis.Redis.from_url(redis_url)
        self.log = RedisEventLog(self.redis, f"{namespace}:events")
        self.detector = LLMFacilityDetector(subject, kv_pressure_at, backlog_at)
        self.clock = clock
        self.every_s = every_s
        self.reads = 0
        self._elapsed = 0.0
        self._stop = asyncio.Event()

    async def _now(self) -> float:
        if self.clock is not None:
            try:
                return float(await asyncio.wait_for(self.clock(), CLOCK_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - fall back to our own count of intervals
                log.debug("fleet clock unavailable", exc_info=True)
        return self._elapsed

    async def step(self) -> list[Event]:
        """One read → detect → append; returns the events appended."""
        text = await asyncio.wait_for(self.reader.read(), READ_TIMEOUT_S)
        events = self.detector.observe(parse_vllm_metrics(text, await self._now()))
        await self.log.append(events)
        self.reads += 1
        return events

    async def run(self) -> None:
        """Loop until ``stop``; a failed read is logged and retried next interval."""
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - the engine may be starting or restarting
                log.warning("reading the LLM engine metrics failed", exc_info=True)
            self._elapsed += self.every_s
            try:
                await asyncio.wait_for(self._stop.wait(), self.every_s)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()

    async def latest(self) -> dict | None:
        """The LLM facility as last read (KV-cache use, running/waiting, tokens/s, TTFT)."""
        return self.detector.latest
