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

import math
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from actors.twin.profiles import canonical_model
from cluster.telemetry.quality import Quarantined, Validator, is_blank
from cluster.telemetry.samples import Sample

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
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for sample in metric_samples(text, bad_lines):
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


class DcgmSource:
    """``TelemetrySource`` that scrapes dcgm-exporter pages (one URL per host)."""

    def __init__(self, urls: list[str], timeout_s: float = 5.0, node_of: Callable[[str], str] = lambda h: h,
                 clock: Callable[[], float] = time.time, validator: Validator | None = None) -> None:
        self.urls = urls
        self.timeout_s = timeout_s
        self.node_of = node_of
        self.clock = clock
        self.validator = validator or Validator()
        self.quarantined: list[Quarantined] = []
        self.errors: dict[str, str] = {}
        self.skipped_lines: dict[str, int] = {}  # per URL: lines of its pages that were not Prometheus text
        self._n = 0

    async def read(self) -> list[Sample]:
        """One scrape of every URL; an unreachable exporter is recorded in ``errors``, never raised."""
        out: list[Sample] = []
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for url in self.urls:
                try:
                    resp = await client.get(url)
                    resp.raise_for_status()
                except httpx.HTTPError as exc:
                    self.errors[url] = f"{type(exc).__name__}: {exc}"
                    continue
                bad: list[str] = []
                recs = parse_metrics(resp.text, self.node_of, bad)
                if bad and not recs:
                    first = bad[0][:120]
                    self.errors[url] = f"not a Prometheus metrics page: {len(bad)} lines unreadable, first {first!r}"
                    continue
                self.errors.pop(url, None)
                if bad:
                    self.skipped_lines[url] = self.skipped_lines.get(url, 0) + len(bad)
                ts = round(self.clock(), 3)
                for rec in recs:
                    self._n += 1
                    got = self.validator.check("dcgm", self._n, {**rec, "ts": ts})
                    if isinstance(got, Quarantined):
                        self.quarantined.append(got)
                    else:
                        out.append(got)
        return out
