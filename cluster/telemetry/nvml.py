"""NVML source: the local GPUs through ``pynvml`` (from the ``nvidia-ml-py`` package).

Reads temperature, power, power limit, SM clock, utilisation, throttle reasons and pending XID events. NVML
delivers each XID once, as an event: the source counts them per GPU (``xid_total``), so the twin raises one
event per XID even when the same code repeats.
On a machine without an NVIDIA driver ``nvmlInit`` fails at once; :class:`NvmlUnavailable` says so in a
sentence a person can act on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.twin.profiles import canonical_model
from cluster.telemetry.dcgm import decode_throttle
from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import Sample


class NvmlUnavailable(RuntimeError):
    """No usable NVIDIA driver (or no GPU) on this machine."""


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency of opsloop
        raise NvmlUnavailable("the nvml source needs nvidia-ml-py (pip install nvidia-ml-py)") from exc
    return pynvml


def init() -> Any:
    """Initialise NVML and return the module.

    Raises:
        NvmlUnavailable: no NVIDIA driver library or no GPU; the message says what to use instead.
    """
    nv = _nvml()
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise NvmlUnavailable(
            f"NVML is not available here ({exc}): no NVIDIA GPU or driver on this machine. "
            "Use the sim, replay, dcgm or prometheus telemetry source instead."
        ) from exc
    return nv


class NvmlSource:
    """``TelemetrySource`` over the GPUs of this host."""

    def __init__(self, node: str = "n01", clock: Callable[[], float] = time.time,
                 validator: Validator | None = None) -> None:
        self.nv = init()
        self.node = node
        self.clock = clock
        self.validator = validator or Validator()
        self.quarantined: list[Quarantined] = []
        count = self.nv.nvmlDeviceGetCount()
        self.handles = [self.nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.models = [_decode(self.nv.nvmlDeviceGetName(h)) for h in self.handles]
        self.events = self.nv.nvmlEventSetCreate()
        for h in self.handles:
            try:
                self.nv.nvmlDeviceRegisterEvents(h, self.nv.nvmlEventTypeXidCriticalError, self.events)
            except self.nv.NVMLError:
                pass  # some GPUs (or containers) do not deliver XID events
        self._n = 0
        self.xid_total = [0] * count  # XID events seen per GPU since this source started

    def _xids(self) -> dict[int, int]:
        out: dict[int, int] = {}
        while True:
            try:
                ev = self.nv.nvmlEventSetWait_v2(self.events, 0)
            except self.nv.NVMLError:
                return out
            i = self.handles.index(ev.device) if ev.device in self.handles else 0
            out[i] = int(ev.eventData)
            self.xid_total[i] += 1

    async def read(self) -> list[Sample]:
        """One reading of every GPU."""
        nv, out, ts = self.nv, [], round(self.clock(), 3)
        xids = self._xids()
        for i, h in enumerate(self.handles):
            rec: dict[str, Any] = {"ts": ts, "node": self.node, "gpu": i, "model": canonical_model(self.models[i]),
                                   "xid_total": self.xid_total[i]}
            reads = {
                "temp_c": lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                "power_w": lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "power_limit_w": lambda h=h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
                "sm_clock_mhz": lambda h=h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                "util": lambda h=h: nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                "throttle_reasons": lambda h=h: list(decode_throttle(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))),
            }
            for field, fn in reads.items():
                try:
                    rec[field] = fn()
                except nv.NVMLError:
                    pass  # not supported on this GPU: the field stays absent, the validator decides
            if i in xids:
                rec["xid"] = xids[i]
            self._n += 1
            got = self.validator.check("nvml", self._n, rec)
            if isinstance(got, Quarantined):
                self.quarantined.append(got)
            else:
                out.append(got)
        return out


def _decode(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
