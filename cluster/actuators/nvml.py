"""The NVML actuator: sets a GPU's power limit through ``pynvml`` (from ``nvidia-ml-py``) on this host.

Only ``set_power_limit`` is an NVML action; everything else fails clearly. Without a GPU, a driver or root,
the result says so (``failed`` with the reason) instead of raising.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.actuators.results import action_result
from cluster.telemetry.samples import ActionResult
from policies.actions import Action


def _nvml() -> Any:
    import pynvml  # nvidia-ml-py; imported late so hosts without it can still load opsloop

    return pynvml


def set_power_limit(index: int, watts: float) -> str:
    """Set GPU ``index``'s power limit (clamped to its allowed range); returns what changed.

    Raises:
        RuntimeError: NVML is missing, has no GPU ``index``, or refuses (no permission).
    """
    try:
        nv = _nvml()
    except ImportError as exc:
        raise RuntimeError("nvidia-ml-py (pynvml) is not installed") from exc
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise RuntimeError(f"NVML is not available on this host ({exc}); no NVIDIA driver or GPU?") from exc
    try:
        count = nv.nvmlDeviceGetCount()
        if index >= count:
            raise RuntimeError(f"this host has {count} GPU(s); there is no gpu{index}")
        h = nv.nvmlDeviceGetHandleByIndex(index)
        lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
        before = nv.nvmlDeviceGetPowerManagementLimit(h)
        mw = int(min(max(watts * 1000, lo), hi))
        nv.nvmlDeviceSetPowerManagementLimit(h, mw)
        return f"gpu{index} power limit {before / 1000:.0f} -> {mw / 1000:.0f} W"
    except nv.NVMLError_NoPermission as exc:
        raise RuntimeError(f"NVML refused: {exc} (setting a power limit needs root)") from exc
    except nv.NVMLError as exc:
        raise RuntimeError(f"NVML error: {exc}") from exc
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass


class NvmlActuator:
    """Power limits on this host's GPUs (``n01/gpu3`` means local GPU index 3); idempotent by action id."""

    def __init__(self) -> None:
        self._done: dict[str, ActionResult] = {}

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Apply the power limit in a worker thread (NVML calls block)."""
        if action_id in self._done:
            return self._done[action_id]
        status, detail = "failed", f"the nvml actuator only sets power limits, not {action.kind}"
        if action.kind == "set_power_limit":
            index = int(action.gpu.rsplit("/gpu", 1)[1])
            try:
                detail = await asyncio.to_thread(set_power_limit, index, action.watts)
                status = "executed"
            except RuntimeError as exc:
                detail = str(exc)
        result = action_result(action, action_id, approval_id, status, detail, traceparent)  # type: ignore[arg-type]
        if status == "executed":
            self._done[action_id] = result
        return result
