# ruff: noqa: E501
"""DCGM scrape against a local exporter page; NVML's clear message without a GPU."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster.telemetry.dcgm import DcgmSource, parse_metrics
from cluster.telemetry.nvml import NvmlUnavailable, init
from tests.requirements_check import skip_on_gpu_host

PAGE = """# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 1980
DCGM_FI_DEV_SM_CLOCK{gpu="1",UUID="GPU-bb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 1410
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 71
DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-bb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 88
DCGM_FI_DEV_MEMORY_TEMP{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 64
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 612.5
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-bb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 455.0
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 97
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="1",UUID="GPU-bb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 68
DCGM_FI_DEV_XID_ERRORS{gpu="1",UUID="GPU-bb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n01",err_code="79",err_msg="fallen off the bus"} 79
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-aa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n01"} 0
"""


@pytest.fixture
def exporter() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_parse_maps_dcgm_fields() -> None:
    recs = parse_metrics(PAGE)
    assert recs[0] == {"node": "n01", "gpu": 0, "model": "H100-SXM", "sm_clock_mhz": 1980.0, "temp_c": 71.0,
                       "mem_temp_c": 64.0, "power_w": 612.5, "util": 0.97, "xid": 0}  # 0: no XID since driver load
    assert recs[1]["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"] and recs[1]["xid"] == 79


@pytest.mark.anyio
async def test_scrape_a_local_exporter(exporter: str) -> None:
    src = DcgmSource([exporter, "http://127.0.0.1:9/metrics"], timeout_s=2.0, clock=lambda: 100.0)
    samples = await src.read()
    assert [s.name for s in samples] == ["n01/gpu0", "n01/gpu1"] and samples[1].temp_c == 88.0
    assert "http://127.0.0.1:9/metrics" in src.errors
    again = await src.read()  # same timestamp from a frozen clock: quarantined as duplicates, counted
    assert again == [] and src.validator.summary()["dcgm"]["by_reason"] == {"duplicate_ts": 2}


def _has_gpu() -> bool:
    try:
        init()
        return True
    except NvmlUnavailable:
        return False


def test_nvml_without_a_gpu_says_so_clearly() -> None:
    if _has_gpu():
        skip_on_gpu_host("this machine has a GPU")
    with pytest.raises(NvmlUnavailable, match="no NVIDIA GPU or driver.*sim, replay, dcgm or prometheus"):
        init()


@pytest.mark.gpu
@pytest.mark.anyio
async def test_nvml_reads_the_local_gpus() -> None:
    if not _has_gpu():
        pytest.skip("no NVIDIA GPU here")
    from cluster.telemetry.nvml import NvmlSource

    samples = await NvmlSource().read()
    assert samples and all(0 < s.temp_c < 120 for s in samples)
