"""DCGM source: scrape a dcgm-exporter ``/metrics`` page and map its ``DCGM_FI_*`` fields to samples.

dcgm-exporter labels each series with ``gpu`` (index), ``Hostname`` and ``modelName``. The page carries
no timestamps, so the source stamps samples with its own clock (seconds, monotonic within the source).
Fields: DCGM_FI_DEV_GPU_TEMP → temp_c, DCGM_FI_DEV_MEMORY_TEMP → mem_temp_c, DCGM_FI_DEV_POWER_USAGE →
power_w, DCGM_FI_DEV_POWER_MGMT_LIMIT (or ENFORCED_LIMIT) → power_limit_w, DCGM_FI_DEV_SM_CLOCK →
sm_clock_mhz, DCGM_FI_DEV_GPU_UTIL (per cent) → util, DCGM_FI_DEV_CLOCK_THROTTLE_REASONS (NVML bitmask) →
throttle_reasons, DCGM_FI_DEV_XID_ERRORS → xid.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from cluster.telemetry.quality import Quarantined, Validator
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
_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def decode_throttle(mask: int) -> tuple[str, ...]:
    """NVML throttle-reason bitmask → reason names."""
    return tuple(name for bit, name in THROTTLE_BITS.items() if mask & bit)


def parse_metrics(text: str, node_of: Callable[[str], str] = lambda h: h) -> list[dict[str, Any]]:
    """Prometheus text from dcgm-exporter → one gpu record per (host, gpu), in the trace format (no ts)."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m or m["name"] not in FIELDS:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        try:
            gpu, value = int(labels.get("gpu", "")), float(m["value"])
        except ValueError:
            continue
        host = node_of(labels.get("Hostname", "n01"))
        rec = records.setdefault((host, gpu), {"node": host, "gpu": gpu})
        if labels.get("modelName"):
            rec["model"] = _model(labels["modelName"])
        field = FIELDS[m["name"]]
        if field == "throttle_reasons":
            rec[field] = list(decode_throttle(int(value)))
        elif field == "util":
            rec[field] = value / 100.0
        elif field == "xid":
            if value > 0:
                rec[field] = int(value)
        else:
            rec[field] = value
    return [records[k] for k in sorted(records)]


def _model(name: str) -> str:
    up = name.upper()
    for key in ("H100", "A100"):
        if key in up:
            return f"{key}-SXM"
    return name


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
                self.errors.pop(url, None)
                ts = round(self.clock(), 3)
                for rec in parse_metrics(resp.text, self.node_of):
                    self._n += 1
                    got = self.validator.check("dcgm", self._n, {**rec, "ts": ts})
                    if isinstance(got, Quarantined):
                        self.quarantined.append(got)
                    else:
                        out.append(got)
        return out
