"""`--telemetry nvml`: the readers are read at once, a silent one is lost then restored, and a cluster whose
"GPU" node has no NVIDIA driver stops with a sentence naming the node."""

from __future__ import annotations

import asyncio
import tempfile

import pytest

from cluster.nvml_readers import FanIn, start_readers
from cluster.telemetry.nvml import NvmlUnavailable, init
from cluster.telemetry.samples import GpuSample, SourceStatus
from tests.requirements_check import skip_on_gpu_host


class Reader:
    """A node's reader as the coordinator sees it (the boundary: NVML itself cannot run here)."""

    def __init__(self, node: str) -> None:
        self.node, self.mode, self.n = node, "ok", 0

    async def read(self) -> list:
        if self.mode == "fail":
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        if self.mode == "hang":
            await asyncio.Event().wait()
        self.n += 1
        return [GpuSample(ts=float(self.n), node=self.node, gpu=0, temp_c=50.0)]


@pytest.mark.anyio
async def test_fan_in_reads_every_node_and_names_the_one_that_stops() -> None:
    a, b = Reader("gpu-node-a"), Reader("gpu-node-b")
    fan = FanIn({"gpu-node-b": b, "gpu-node-a": a}, timeout_s=0.2, lost_after=2, clock=lambda: 1_790_000_000.0)
    first = await fan.read()
    assert [s.node for s in first] == ["gpu-node-a", "gpu-node-b"]  # a fixed order, whatever the answer order
    b.mode = "hang"
    assert [s.node for s in await fan.read()] == ["gpu-node-a"] and "TimeoutError" in fan.errors["gpu-node-b"]
    lost = [s for s in await fan.read() if isinstance(s, SourceStatus)]
    assert [(s.host, s.ok, s.missed, s.source) for s in lost] == [("gpu-node-b", False, 2, "nvml")]
    b.mode = "fail"
    assert [s for s in await fan.read() if isinstance(s, SourceStatus)] == []  # still lost: said once
    b.mode = "ok"
    back = await fan.read()
    assert [(s.host, s.ok) for s in back if isinstance(s, SourceStatus)] == [("gpu-node-b", True)]
    assert fan.errors == {}


@pytest.mark.ray
def test_a_gpu_node_without_a_driver_stops_up_with_its_reason() -> None:
    try:
        init()
    except NvmlUnavailable:
        pass
    else:
        skip_on_gpu_host("NVML loads on this host: the no-driver path cannot be shown here")
    import ray

    with pytest.raises(ValueError, match="no node of the Ray cluster has a GPU"):
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="ol-nv-", dir="/tmp"), namespace="nvmltest")
        try:
            start_readers("nvmltest")
        finally:
            ray.shutdown()
    # A node that says it has a GPU (a logical resource here) but where NVML does not load.
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ol-nv-", dir="/tmp"), namespace="nvmltest")
    try:
        with pytest.raises(ValueError, match=r"NVML reader on .* did not start: .*NVML is not available"):
            start_readers("nvmltest")
    finally:
        ray.shutdown()
