"""A stand-in for the ``pynvml`` calls the NVML actuator makes (NVML is a boundary we cannot run here: no GPU).

It keeps each GPU's power limit (mW), its constraints and the processes on it, and raises ``pynvml``'s own error
classes, so the actuator's error handling meets what the real module raises. Picklable: it travels into a node's
actuator actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml


@dataclass
class StubGpu:
    lo_mw: int = 200_000
    hi_mw: int = 700_000
    limit_mw: int = 700_000
    pids: list[int] = field(default_factory=list)


class StubNvml:
    """The NVML functions the actuator calls, over ``gpus`` (index → :class:`StubGpu`)."""

    NVMLError = pynvml.NVMLError
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported

    def __init__(self, gpus: list[StubGpu], *, root: bool = True) -> None:
        self.gpus = gpus
        self.root = root
        self.sessions = 0  # open nvmlInit sessions
        self.set_calls: list[tuple[int, int]] = []

    def nvmlInit(self) -> None:
        self.sessions += 1

    def nvmlShutdown(self) -> None:
        self.sessions -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: int) -> list[int]:
        return [self.gpus[h].lo_mw, self.gpus[h].hi_mw]

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return self.gpus[h].limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: int, mw: int) -> None:
        if not self.root:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        if not self.gpus[h].lo_mw <= mw <= self.gpus[h].hi_mw:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.set_calls.append((h, mw))
        self.gpus[h].limit_mw = mw

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in self.gpus[h].pids]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
