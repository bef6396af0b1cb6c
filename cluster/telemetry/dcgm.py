"""DCGM source: scrape a dcgm-exporter ``/metrics`` page and map its ``DCGM_FI_*`` fields to samples.

dcgm-exporter labels each series with ``gpu`` (index), ``UUID``, ``pci_bus_id``, ``device``, ``modelName`` and
``Hostname``. The page is parsed by ``prometheus_client.parser`` (no parser of our own) and carries no
timestamps, so the source stamps samples with its own clock (seconds, monotonic within the source).
A blank field (DCGM's blank sentinels) becomes NaN, which the validator treats as missing, never as 0.
Fields: DCGM_FI_DEV_GPU_TEMP → temp_c, DCGM_FI_DEV_MEMORY_TEMP → mem_temp_c, DCGM_FI_DEV_POWER_USAGE →
power_w, DCGM_FI_DEV_POWER_MGMT_LIMIT (or ENFORCED_LIMIT) → power_limit_w, DCGM_FI_DEV_SM_CLOCK →
sm_clock_mhz, DCGM_FI_DEV_GPU_UTIL (per cent) → util, DCGM_FI_DEV_CLOCK_THROTTLE_REASONS or its newer name
DCGM_FI_DEV_CLOCKS_EVENT_REASONS (NVML bitmask) → throttle_reasons, DCGM_FI_DEV_XID_ERRORS (the *last* XID seen,
0 for none: it repeats on every scrape, the twin raises an event on a change) → xid. ``modelName`` is mapped to
a profile name by :func:`actors.twin.profiles.canonical_model` (an unknown model keeps its printed name).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from actors.twin.profiles import canonical_model
from cluster.telemetry.http_client import HttpClientOwner
from cluster.telemetry.liveness import Liveness
from cluster.telemetry.quality import Quarantined, Validator, is_blank
from cluster.telemetry.samples import Sample, SourceStatus

FIELDS = {
    "DCGM_FI_DEV_GPU_TEMP": "temp_c",
    "DCGM_FI_DEV_MEMORY_TEMP": "mem_temp_c",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "power_limit_w",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
    "DCGM_FI_DEV_GPU_UTIL": "util",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "throttle_reasons",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "throttle_reasons",
    "DCGM_FI_DEV_XID_ERRORS": "xid",
}
#: NVML clocks-throttle-reason bits (nvmlClocksThrottleReason*) → our names.
THROTTLE_BITS = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                 0x80: "hw_power_brake"}


def decode_throttle(mask: int) -> tuple[str, ...]:
    """NVML throttle-reason bitmask → reason names."""
    return tuple(name for bit, name in THROTTLE_BITS.items() if mask & bit)


#: What prometheus_client's parser raises on text that is not the exposition format.
PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError)


def metric_samples(text: str, bad_lines: list[str] | None = None) -> list[Any]:
    """Every sample of a Prometheus text page, read by ``prometheus_client.parser``.

    The parser gives up on the first line it cannot read, which would lose a whole page of good readings for
    one broken line (a truncated scrape, a stray byte): then each line is read on its own, and the lines that
    still do not parse are skipped and appended to ``bad_lines``.
    """
    try:
        return [s for family in text_string_to_metric_families(text) for s in family.samples]
    except PARSE_ERRORS:
        pass
    samples = []
    for line in text.splitlines():
        try:
            samples += [s for family in text_string_to_metric_families(line + "\n") for s in family.samples]
        except PARSE_ERRORS:
            if bad_lines is not None:
                bad_lines.append(line)
    return samples


def parse_metrics(text: str, node_of: Callable[[str], str] = lambda h: h,
                  bad_lines: list[str] | None = None) -> list[dict[str, Any]]:
    """Prometheus text from dcgm-exporter → one gpu record per (host, gpu), in the trace format (no ts).

    A blank value is NaN in the record (the validator makes it a missing field). Lines that are not in the
    exposition format are skipped and appended to ``bad_lines`` (see :func:`metric_samples`); the rest is kept.
    """
    return gpu_records(metric_samples(text, bad_lines), node_of)


def gpu_records(samples: Iterable[Any], node_of: Callable[[str], str] = lambda h: h,
                stamp: bool = False) -> list[dict[str, Any]]:
    """dcgm-exporter series → one gpu record per (host, gpu), in the trace format: the mapping of every source
    of ``DCGM_FI_*`` series (a scraped page, Prometheus's HTTP API).

    Args:
        samples: ``prometheus_client`` ``Sample``s (``name``, ``labels``, ``value``, ``timestamp``); other
            metrics than :data:`FIELDS` and series without a ``gpu`` label are ignored.
        node_of: host name (the ``Hostname`` label) → node name.
        stamp: give each record a ``ts``, the newest timestamp of its series (a page has none; Prometheus's
            API gives each sample's).
    """
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for sample in samples:
        field = FIELDS.get(sample.name)
        if field is None:
            continue
        labels = sample.labels
        try:
            gpu = int(labels.get("gpu", ""))
        except ValueError:
            continue
        host = node_of(labels.get("Hostname") or "n01")
        rec = records.setdefault((host, gpu), {"node": host, "gpu": gpu})
        if stamp and sample.timestamp is not None:
            rec["ts"] = max(rec.get("ts", 0.0), float(sample.timestamp))
        model = labels.get("modelName", "")
        if model and not is_blank(model):
            rec["model"] = canonical_model(model)
        value = float(sample.value)
        if is_blank(value):
            rec.setdefault(field, math.nan)
        elif field == "throttle_reasons":
            rec[field] = list(decode_throttle(int(value)))
        elif field == "util":
            rec[field] = value / 100.0
        elif field == "xid":
            rec[field] = int(value)
        else:
            rec[field] = value
    return [records[k] for k in sorted(records)]


class DcgmSource(HttpClientOwner):
    """``TelemetrySource`` that scrapes dcgm-exporter pages (one URL per host), all at once.

    Every URL is fetched concurrently (at most ``max_concurrent`` at a time), each with its own timeout, so one
    slow exporter costs a tick at most ``timeout_s``, not the sum. An exporter that fails, times out or serves
    something that is not metrics for ``lost_after`` scrapes in a row, or a GPU that is missing from its host's
    page that long, is reported lost (a ``SourceStatus`` sample naming the URL's host or the GPU, which the twin
    turns into ``telemetry_lost``), and restored when it is back. The reason of the last failure is in ``errors``.

    Args:
        urls: One dcgm-exporter ``/metrics`` URL per host.
        timeout_s: Per-request timeout (connect, read, the whole page).
        node_of: Host name as the page prints it (``Hostname`` label) → node name in the twin.
        clock: Unix seconds; samples from a scrape carry its time.
        validator: Shared validator (its counters are the source's data-quality report).
        lost_after: Missed scrapes in a row after which an exporter or a GPU is lost.
        max_concurrent: Requests in flight at once.
    """

    def __init__(self, urls: list[str], timeout_s: float = 5.0, node_of: Callable[[str], str] = lambda h: h,
                 clock: Callable[[], float] = time.time, validator: Validator | None = None,
                 lost_after: int = 3, max_concurrent: int = 64) -> None:
        if not urls:
            raise ValueError("the dcgm source needs at least one exporter URL (--dcgm-url URL)")
        for url in urls:
            if httpx.URL(url).scheme not in ("http", "https"):
                raise ValueError(f"not an http(s) URL of a dcgm-exporter: {url!r}")
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.node_of = node_of
        self.clock = clock
        self.validator = validator or Validator()
        self.liveness = Liveness(lost_after)
        self.max_concurrent = max_concurrent
        self.quarantined: list[Quarantined] = []
        self.errors: dict[str, str] = {}
        self.skipped_lines: dict[str, int] = {}  # per URL: lines of its pages that were not Prometheus text
        self.gpus: dict[str, set[tuple[str, int]]] = {}  # per URL: the (host, gpu) its pages have carried
        self._n = 0
        self._client: httpx.AsyncClient | None = None

    async def _fetch(self, url: str) -> list[dict[str, Any]] | str:
        """One exporter's GPU records, or why there are none (the error as text)."""
        assert self._client is not None
        try:
            resp = await self._client.get(url)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        bad: list[str] = []
        recs = parse_metrics(resp.text, self.node_of, bad)
        if bad and not recs:
            return f"not a Prometheus metrics page: {len(bad)} lines unreadable, first {bad[0][:120]!r}"
        if bad:
            self.skipped_lines[url] = self.skipped_lines.get(url, 0) + len(bad)
        return recs

    async def read(self) -> list[Sample]:
        """One scrape of every URL; an exporter that does not answer is recorded, never raised."""
        if self._client is None:
            limits = httpx.Limits(max_connections=self.max_concurrent, max_keepalive_connections=self.max_concurrent)
            self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
        gate = asyncio.Semaphore(self.max_concurrent)  # in flight at once (not left to the pool's waiter queue)

        async def fetch(url: str) -> list[dict[str, Any]] | str:
            async with gate:
                return await self._fetch(url)

        pages = await asyncio.gather(*(fetch(url) for url in self.urls))
        ts = round(self.clock(), 3)
        out: list[Sample] = []
        for url, got in zip(self.urls, pages, strict=True):
            host = httpx.URL(url).netloc.decode()
            if isinstance(got, str):
                self.errors[url] = got
                out += self._lost(ts, host, url, got)
                continue
            self.errors.pop(url, None)
            out += self._restored(ts, host, url)
            here = {(rec["node"], rec["gpu"]) for rec in got}
            had = self.gpus.setdefault(url, set())
            for node, gpu in sorted(had - here):
                out += self._lost(ts, f"{node}/gpu{gpu}", url, f"{node}/gpu{gpu} missing from {url}")
            for node, gpu in sorted(here):
                out += self._restored(ts, f"{node}/gpu{gpu}", url)
            had |= here
            for rec in got:
                self._n += 1
                checked = self.validator.check("dcgm", self._n, {**rec, "ts": ts})
                if isinstance(checked, Quarantined):
                    self.quarantined.append(checked)
                else:
                    out.append(checked)
        return out

    def _lost(self, ts: float, target: str, url: str, error: str) -> list[Sample]:
        missed = self.liveness.missed(target)
        if missed is None:
            return []
        return [SourceStatus(ts=ts, source="dcgm", host=target, ok=False, missed=missed, url=url, error=error[:500])]

    def _restored(self, ts: float, target: str, url: str) -> list[Sample]:
        if not self.liveness.seen(target):
            return []
        return [SourceStatus(ts=ts, source="dcgm", host=target, ok=True, missed=0, url=url)]
