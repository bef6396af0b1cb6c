"""NVML's node-local actions on the GPUs of the host the code runs on: power limits through ``pynvml`` (from
``nvidia-ml-py``) and GPU resets through ``nvidia-smi --gpu-reset``.

:class:`NvmlGpus` holds the logic over an injected NVML module (``pynvml``, or a stub where no GPU exists): a power
limit outside the range ``nvmlDeviceGetPowerManagementLimitConstraints`` reports is refused, never clamped (the
approval was for that number), and a reset is refused while any process uses the GPU. :class:`NvmlActuator` applies
it on this host, whatever node the target names; on a Ray cluster every GPU node runs its own
(:mod:`cluster.actuators.node`). Without a GPU, a driver or root, the result says so (``failed`` with the reason)
instead of raising.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from actors.gateway.effects import Effect, new_value
from cluster.actuators.results import action_result
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, describe

#: The actions NVML carries out on a node (the rest are the scheduler's, the facility's or the base actuator's).
NODE_KINDS = ("set_power_limit", "reset_gpu")
#: Bound on ``nvidia-smi --gpu-reset`` (a reset takes seconds; it stays under the gateway's bound on one execution).
RESET_TIMEOUT_S = 20.0


def gpu_index(gpu: str) -> int:
    """``n02/gpu3`` → 3."""
    return int(gpu.rsplit("/gpu", 1)[1])


def _pynvml() -> Any:
    try:
        import pynvml  # nvidia-ml-py; imported late so hosts without it can still load opsloop
    except ImportError as exc:
        raise RuntimeError("nvidia-ml-py (pynvml) is not installed") from exc
    return pynvml


class NvmlGpus:
    """The GPUs of this host as NVML sees them, one NVML session per call.

    Args:
        nv: The NVML module (``None``: ``pynvml``, loaded at the first call).
        smi: Path of ``nvidia-smi`` for resets (``None``: looked up on ``PATH`` at the reset).
    """

    def __init__(self, nv: Any = None, smi: str | None = None) -> None:
        self._nv = nv
        self.smi = smi

    @contextmanager
    def _session(self) -> Iterator[Any]:
        nv = self._nv if self._nv is not None else _pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise RuntimeError(f"NVML is not available on this host ({exc}); no NVIDIA driver or GPU?") from exc
        try:
            yield nv
        except nv.NVMLError_NoPermission as exc:
            raise RuntimeError(f"NVML refused: {exc} (this needs root)") from exc
        except nv.NVMLError as exc:
            raise RuntimeError(f"NVML error: {exc}") from exc
        finally:
            try:
                nv.nvmlShutdown()
            except nv.NVMLError:
                pass

    @staticmethod
    def _handle(nv: Any, index: int) -> Any:
        count = nv.nvmlDeviceGetCount()
        if index >= count:
            raise RuntimeError(f"this host has {count} GPU(s); there is no gpu{index}")
        return nv.nvmlDeviceGetHandleByIndex(index)

    def limits(self) -> list[tuple[float, float]]:
        """Each GPU's allowed power limit range in W, by index.

        Raises:
            RuntimeError: NVML is missing or fails.
        """
        with self._session() as nv:
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(nv.nvmlDeviceGetHandleByIndex(i))
                out.append((lo / 1000.0, hi / 1000.0))
            return out

    def set_power_limit(self, index: int, watts: float) -> tuple[str, float]:
        """Set GPU ``index``'s power limit; returns what changed, and the limit before in watts.

        Raises:
            RuntimeError: NVML is missing, has no GPU ``index``, the limit is outside the GPU's range, or NVML
                refuses (no permission).
        """
        with self._session() as nv:
            h = self._handle(nv, index)
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
            mw = round(watts * 1000)
            if not lo <= mw <= hi:
                raise RuntimeError(f"gpu{index} takes power limits of {lo / 1000:.0f}-{hi / 1000:.0f} W "
                                   f"(NVML's constraints); {watts:g} W is outside, nothing changed")
            before = nv.nvmlDeviceGetPowerManagementLimit(h)
            nv.nvmlDeviceSetPowerManagementLimit(h, mw)
            return f"gpu{index} power limit {before / 1000:.0f} -> {mw / 1000:.0f} W", before / 1000

    def processes(self, index: int) -> list[int]:
        """The pids using GPU ``index`` (compute and graphics)."""
        with self._session() as nv:
            h = self._handle(nv, index)
            procs = list(nv.nvmlDeviceGetComputeRunningProcesses(h))
            try:
                procs += nv.nvmlDeviceGetGraphicsRunningProcesses(h)
            except nv.NVMLError_NotSupported:
                pass
            return sorted({int(p.pid) for p in procs})

    def reset_gpu(self, index: int) -> str:
        """Reset GPU ``index`` with ``nvidia-smi --gpu-reset``, only when no process uses it.

        Raises:
            RuntimeError: NVML fails, a process uses the GPU, ``nvidia-smi`` is missing, fails or hangs.
        """
        pids = self.processes(index)
        if pids:
            raise RuntimeError(f"gpu{index} is in use by {len(pids)} process(es) (pid {', '.join(map(str, pids))}): "
                               "not reset; stop or move them first")
        smi = self.smi or shutil.which("nvidia-smi")
        if not smi:
            raise RuntimeError("nvidia-smi is not on PATH: no GPU reset without it")
        try:
            done = subprocess.run([smi, "--gpu-reset", "-i", str(index)], capture_output=True, text=True,
                                  timeout=RESET_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"nvidia-smi --gpu-reset -i {index} gave no answer within {RESET_TIMEOUT_S:g} s"
                               ) from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"nvidia-smi --gpu-reset -i {index} failed: {why[-1] if why else done.returncode}")
        return f"gpu{index} reset"


async def carry_out(gpus: NvmlGpus, action: Action) -> tuple[str, str, dict[str, float | str] | None]:
    """Run a node-local action on ``gpus`` in a worker thread (NVML calls block): ``(status, detail, previous)``, the
    last the power limit before (``ActionResult.previous``) when one was set."""
    try:
        if action.kind == "set_power_limit":
            detail, before = await asyncio.to_thread(gpus.set_power_limit, gpu_index(action.gpu), action.watts)
            return "executed", detail, {"watts": before}
        if action.kind == "reset_gpu":
            return "executed", await asyncio.to_thread(gpus.reset_gpu, gpu_index(action.gpu)), None
    except RuntimeError as exc:
        return "failed", str(exc), None
    return "failed", f"the nvml actuator only sets power limits and resets GPUs, not {action.kind}", None


class NvmlActuator:
    """Power limits and resets on this host's GPUs (``n01/gpu3`` means local GPU index 3, whatever the node);
    idempotent by action id."""

    def __init__(self, nv: Any = None, smi: str | None = None) -> None:
        self.gpus = NvmlGpus(nv, smi)
        self._done: dict[str, ActionResult] = {}

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Apply the action on this host."""
        if action_id in self._done:
            return self._done[action_id]
        status, detail, previous = await carry_out(self.gpus, action)
        result = action_result(action, action_id, approval_id, status, detail, traceparent,  # type: ignore[arg-type]
                               previous)
        if status == "executed":
            self._done[action_id] = result
        return result

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """What :meth:`execute` will run on this host (:func:`nvml_effect`)."""
        host = socket.gethostname()
        return await nvml_effect(self.gpus, action, f"on {host} (the gateway's host, whatever the node)")


async def nvml_effect(gpus: NvmlGpus, action: Action, where: str) -> Effect:
    """The NVML call or ``nvidia-smi`` command :func:`carry_out` will run on ``gpus`` (``where``: their host), with
    the GPU's state now read through NVML (no driver, GPU or permission: unknown, with why); a limit outside the GPU's
    range or a GPU in use is refused, and the effect says so."""
    if action.kind not in NODE_KINDS:
        return Effect(call=f"nothing: NVML only sets power limits and resets GPUs; {describe(action)} will fail",
                      where=f"NVML {where}", current="n/a", new="unchanged")
    index = gpu_index(action.gpu)  # type: ignore[union-attr]
    where = f"NVML {where}, GPU index {index}"

    def read() -> tuple[float, float, float] | list[int]:
        if action.kind == "reset_gpu":
            return gpus.processes(index)
        with gpus._session() as nv:
            h = gpus._handle(nv, index)
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
            return nv.nvmlDeviceGetPowerManagementLimit(h) / 1000, lo / 1000, hi / 1000

    if action.kind == "reset_gpu":
        call = f"{gpus.smi or 'nvidia-smi'} --gpu-reset -i {index}"
    else:
        call = f"nvmlDeviceSetPowerManagementLimit(gpu{index}, {round(action.watts * 1000)} mW)"  # type: ignore[union-attr]
    try:
        now = await asyncio.to_thread(read)
    except RuntimeError as exc:
        return Effect(call=call, where=where, current=f"unknown ({exc})", new=new_value(action))
    if isinstance(now, list):  # the processes on the GPU to reset
        if now:
            return Effect(call=f"nothing: {call} is refused while a process uses the GPU", where=where,
                          current=f"in use by {len(now)} process(es) (pid {', '.join(map(str, now[:10]))})",
                          new="unchanged")
        return Effect(call=call, where=where, current="no process uses it (NVML)", new=new_value(action))
    limit, lo, hi = now
    watts: float = action.watts  # type: ignore[union-attr]
    if not lo <= watts <= hi:
        return Effect(call=f"nothing: {watts:g} W is outside gpu{index}'s {lo:.0f}-{hi:.0f} W, refused", where=where,
                      current=f"power limit {limit:.0f} W (NVML)", new="unchanged")
    return Effect(call=call, where=where, current=f"power limit {limit:.0f} W (NVML)", new=f"power limit {watts:g} W",
                  reading={"watts": limit})
