"""The simulated fleet as dcgm-exporter pages: the page format, its round trip through our DCGM parser, and
``opsloop sim exporter`` serving one host per port (read back by ``DcgmSource``), stopping cleanly."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.twin.physics import Topology
from actors.twin.profiles import PROFILES, canonical_model
from cluster.cli import main
from cluster.telemetry.dcgm import DcgmSource, decode_throttle, parse_metrics
from cluster.telemetry.exporter import (
    COUNTERS,
    INT64_NOT_SUPPORTED,
    LABELS,
    PRINTED_MODEL,
    FleetPages,
    encode_throttle,
    render_page,
)
from cluster.telemetry.samples import GpuSample
from cluster.telemetry.sim import Fault, Simulator
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["DGX-01", "ip-10-0-1-23.ec2.internal"]


def gpu(node: str = "DGX-01", index: int = 0, **kw: object) -> GpuSample:
    base = {"ts": 1.0, "node": node, "gpu": index, "temp_c": 61.6, "power_w": 650.257, "power_limit_w": 700.0,
            "sm_clock_mhz": 1980.4, "util": 0.984, "throttle_reasons": ("sw_power_cap", "hw_thermal_slowdown")}
    return GpuSample(**{**base, **kw})  # type: ignore[arg-type]


def consecutive_free_ports(n: int) -> int:
    """The first of ``n`` consecutive loopback ports that nothing listens on right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {n} consecutive free ports")


def test_a_page_round_trips_through_the_dcgm_parser() -> None:
    gpus = [gpu(index=0), gpu(index=1, temp_c=70.4, mem_temp_c=80.6, throttle_reasons=())]
    text = render_page(gpus, {"DGX-01/gpu1": 79})
    a, b = parse_metrics(text)
    assert (a["node"], a["gpu"], b["gpu"]) == ("DGX-01", 0, 1)
    assert a["model"] == b["model"] == "H100-SXM"
    assert a["temp_c"] == 62.0 and b["temp_c"] == 70.0, "whole degrees, as DCGM reports them"
    assert math.isnan(a["mem_temp_c"]) and b["mem_temp_c"] == 81.0, "a reading the GPU lacks is DCGM's blank"
    assert a["power_w"] == 650.257 and a["power_limit_w"] == 700.0 and a["sm_clock_mhz"] == 1980.0
    assert a["util"] == 0.98
    assert a["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"] and b["throttle_reasons"] == []
    assert (a["xid"], b["xid"]) == (0, 79)


def test_the_page_is_in_dcgm_exporters_format() -> None:
    text = render_page([gpu(node="ip-10-0-1-23.ec2.internal", index=3)])
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert list(fams) == [c.name for c in COUNTERS]
    for c in COUNTERS:
        assert f"# HELP {c.name} {c.help}\n# TYPE {c.name} gauge\n" in text
        [s] = fams[c.name].samples
        assert set(s.labels) == set(LABELS)
        assert s.labels["Hostname"] == "ip-10-0-1-23.ec2.internal" and s.labels["gpu"] == "3"
        assert s.labels["device"] == "nvidia3" and s.labels["modelName"] == "NVIDIA H100 80GB HBM3"
        assert re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", s.labels["UUID"])
        assert re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:00\.0", s.labels["pci_bus_id"])
    [blank] = fams["DCGM_FI_DEV_MEMORY_TEMP"].samples
    assert blank.value == float(INT64_NOT_SUPPORTED) == float(9223372036854775794)
    for name in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_XID_ERRORS"):
        assert all(float(s.value).is_integer() for s in fams[name].samples), name


def test_a_missing_reading_is_blank_and_the_rest_stays() -> None:
    [rec] = parse_metrics(render_page([GpuSample(ts=1, node="n01", gpu=0, xid=79)]))
    assert rec["xid"] == 79
    assert all(math.isnan(rec[f]) for f in ("temp_c", "power_w", "power_limit_w", "sm_clock_mhz", "util"))


def test_every_profile_prints_as_nvml_does_and_maps_back() -> None:
    assert set(PRINTED_MODEL) == set(PROFILES)
    for profile, printed in PRINTED_MODEL.items():
        assert canonical_model(printed) == profile
        [rec] = parse_metrics(render_page([gpu(model=profile)]))
        assert rec["model"] == profile


def test_throttle_bits_round_trip() -> None:
    names = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake")
    assert set(decode_throttle(encode_throttle(names))) == set(names)
    assert encode_throttle(()) == 0 and encode_throttle(["not_a_reason"]) == 0


def test_the_last_xid_stays_on_the_page_as_dcgm_keeps_it() -> None:
    topo = Topology(HOSTS, 2, ["cu01"], [0, 0], ["B200", "B200"])
    sim = Simulator(topo, [Fault.parse("xid@3:DGX-01/gpu1=79")])
    pages = FleetPages({h: "B200" for h in HOSTS})
    xids = []
    for _ in range(8):
        pages.update(sim.step())
        recs = {(r["node"], r["gpu"]): r for h in pages.hosts for r in parse_metrics(pages.page(h))}
        xids.append(recs[("DGX-01", 1)]["xid"])
        assert recs[("DGX-01", 0)]["xid"] == 0 and recs[("ip-10-0-1-23.ec2.internal", 1)]["xid"] == 0
    assert xids == [0, 0, 79, 79, 79, 79, 79, 79]
    assert pages.hosts == HOSTS
    assert {r["model"] for h in HOSTS for r in parse_metrics(pages.page(h))} == {"B200"}
    assert all(r["node"] == h for h in HOSTS for r in parse_metrics(pages.page(h))), "one host per page"


def _exporter(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cluster", "sim", "exporter", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sim_exporter_serves_a_port_per_host_and_stops_cleanly() -> None:
    port = consecutive_free_ports(2)
    proc = _exporter("--port", str(port), "--hosts", ",".join(HOSTS), "--gpus-per-node", "4",
                     "--fault", "xid@1:ip-10-0-1-23.ec2.internal/gpu2=79")
    try:
        urls = [f"http://127.0.0.1:{port + i}/metrics" for i in range(2)]

        def pages() -> list[str] | None:
            try:
                return [httpx.get(u, timeout=5).text for u in urls]
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return None

        texts = wait_for(pages, timeout_s=60, every_s=0.2)
        for host, text in zip(HOSTS, texts, strict=True):
            assert {(r["node"], r["gpu"]) for r in parse_metrics(text)} == {(host, g) for g in range(4)}

        async def xid_read() -> list[GpuSample]:
            source = DcgmSource(urls)
            try:
                for _ in range(120):
                    got = [s for s in await source.read() if isinstance(s, GpuSample)]
                    assert len(got) == 8 and not source.errors
                    if hits := [s for s in got if s.xid == 79]:
                        return hits
                    await asyncio.sleep(0.5)
            finally:
                await source.aclose()
            raise AssertionError("the XID never showed")

        [hit] = asyncio.run(xid_read())
        assert hit.name == "ip-10-0-1-23.ec2.internal/gpu2"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert f"DGX-01: http://127.0.0.1:{port}/metrics" in out and "stopped after" in err
    with pytest.raises(httpx.HTTPError):
        httpx.get(urls[0], timeout=2)


def test_sim_exporter_names_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["sim", "exporter", "--port", str(port), "--hosts", "1"])
    assert code == 1 and f"cannot listen on 127.0.0.1:{port} for n01" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--hosts", "DGX-01,bad host"], "--hosts: 'bad host' is not a host name"),
    (["--hosts", "a,a"], "distinct host names"),
    (["--fault", "xid@1:n09/gpu0=79"], "unknown target 'n09/gpu0'"),
    (["--fault", "melt@1:n01"], "bad fault"),
    (["--model", "Voodoo5"], "unknown model 'Voodoo5'"),
    (["--port", "65535", "--hosts", "3"], "do not fit below 65536"),
])
def test_sim_exporter_refuses_bad_arguments_and_serves_nothing(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "exporter", *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and "http://" not in out
