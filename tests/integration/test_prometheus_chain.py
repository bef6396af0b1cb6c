"""The whole chain on real servers: simulated dcgm-exporters → Prometheus → Alertmanager → opsloop.

``opsloop sim exporter`` serves two hosts (one port each, real dcgm-exporter pages) with a cooling fault on
DGX-01; Debian's Prometheus scrapes them every second and evaluates a GPU-temperature rule; Debian's
Alertmanager groups the alert and posts it to opsloop's ``POST /api/alerts/alertmanager`` (the real API app on
uvicorn, token-authenticated), the twin reads it from the inbox and logs ``alert_firing`` on the hot GPU; and
``PrometheusSource`` reads the same fleet back from Prometheus's HTTP API, stamped with the scrape times. A
third exporter is stopped to show its GPUs reported lost. Every process runs on free 127.0.0.1 ports with its
own config and data in a temp dir; every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from actors.twin.service import TwinService
from cluster.actuators.feedback import MergedSource
from cluster.telemetry.alerts import AlertSource
from cluster.telemetry.dcgm import parse_metrics
from cluster.telemetry.prometheus import PrometheusSource
from cluster.telemetry.samples import GpuSample, SourceStatus
from serving.alerts import PATH, AlertReceiver
from serving.api import build_app
from tests.helpers import free_port, wait_for
from tests.requirements_check import require
from tests.telemetry.test_exporter import consecutive_free_ports

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["DGX-01", "ip-10-0-1-23.ec2.internal"]
SPARE = "spare-03"  # a third exporter, stopped by a test
TOKEN = "am-token-0123456789abcdef"
NS = "promchain"
HOT_C = 80  # the rule: DCGM_FI_DEV_GPU_TEMP > HOT_C; the healthy host runs at 72-74 °C
T = TypeVar("T")


@dataclass
class Chain:
    exporters: list[str]  # page URLs, one per host of the two-host exporter
    spare: subprocess.Popen[str]  # the third exporter's process
    spare_url: str
    prometheus: str
    alertmanager: str
    api: str
    redis_url: str


def _start(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _up(url: str, proc: subprocess.Popen[str], log: Path) -> Callable[[], bool]:
    def ready() -> bool:
        assert proc.poll() is None, f"{proc.args[0]} exited: {log.read_text()[-2000:]}"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


@pytest.fixture(scope="module")
def chain(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    prometheus, alertmanager = require("prometheus"), require("alertmanager")
    import uvicorn

    tmp = tmp_path_factory.mktemp("promchain")
    procs: list[subprocess.Popen[str]] = []
    api_port, prom_port, am_port, spare_port = free_port(), free_port(), free_port(), free_port()
    exp_port = consecutive_free_ports(len(HOSTS))
    receiver = AlertReceiver(redis_server, NS, TOKEN)

    class Ports:  # the layers the alert route does not use
        pass

    app = build_app(Ports(), Ports(), Ports(), alerts=receiver)  # type: ignore[arg-type]
    api = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(api.serve(),), daemon=True)
    thread.start()
    try:
        sim = [sys.executable, "-m", "cluster", "sim", "exporter", "--gpus-per-node", "2"]
        # Half the flow: DGX-01's readings climb to ~88 °C. A tenth would shut its GPUs down (92 °C, the calibrated
        # plant) before a lagging reading passed 80.
        procs.append(_start([*sim, "--port", str(exp_port), "--hosts", ",".join(HOSTS),
                             "--fault", "cooling_degradation@1:DGX-01=0.5"], tmp / "exporter.log"))
        spare = _start([*sim, "--port", str(spare_port), "--hosts", SPARE], tmp / "spare.log")
        procs.append(spare)
        exporters = [f"127.0.0.1:{exp_port + i}" for i in range(len(HOSTS))]
        (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "gpu", "rules": [{
            "alert": "GpuTooHot", "expr": f"DCGM_FI_DEV_GPU_TEMP > {HOT_C}", "for": "0s",
            "labels": {"severity": "critical"},
            "annotations": {"summary": "{{ $labels.Hostname }} GPU {{ $labels.gpu }} at {{ $value }} C"}}]}]}))
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "dcgm", "static_configs": [
                {"targets": [*exporters, f"127.0.0.1:{spare_port}"]}]}],
        }))
        (tmp / "alertmanager.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "opsloop", "group_by": ["alertname"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "opsloop", "webhook_configs": [{
                "url": f"http://127.0.0.1:{api_port}{PATH}", "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]}],
        }))
        am_log, prom_log = tmp / "alertmanager.log", tmp / "prometheus.log"
        am = _start([alertmanager, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am-data'}",
                     f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], am_log)
        procs.append(am)
        prom = _start([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                       f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                      prom_log)
        procs.append(prom)
        wait_for(lambda: api.started, timeout_s=60, every_s=0.1)
        wait_for(_up(f"http://127.0.0.1:{am_port}/-/ready", am, am_log), timeout_s=120, every_s=0.2)
        wait_for(_up(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log), timeout_s=120, every_s=0.2)
        for i, url in enumerate([*exporters, f"127.0.0.1:{spare_port}"]):
            wait_for(_up(f"http://{url}/metrics", procs[0 if i < len(HOSTS) else 1], tmp / "exporter.log"),
                     timeout_s=120, every_s=0.2)
        yield Chain([f"http://{u}/metrics" for u in exporters], spare, f"http://127.0.0.1:{spare_port}/metrics",
                    f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{api_port}",
                    redis_server)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        api.should_exit = True
        thread.join(10)


async def until(check: Callable[[], Awaitable[T | None]], timeout_s: float, every_s: float = 0.5) -> T:
    """Poll an async ``check`` until it returns something truthy; fail after ``timeout_s`` (a bound)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {check.__name__}")


@pytest.mark.anyio
async def test_an_alert_rule_on_the_exporters_reaches_the_twin_and_prometheus_reads_the_fleet(chain: Chain) -> None:
    prom = PrometheusSource(chain.prometheus, match='job="dcgm"')
    alerts = AlertSource(chain.redis_url, NS)
    twin = TwinService(MergedSource(prom, alerts), chain.redis_url, NS)
    served = {(r["node"], r["gpu"]) for url in chain.exporters for r in parse_metrics(httpx.get(url).text)}
    assert served == {(h, g) for h in HOSTS for g in range(2)}
    try:
        async def alert_firing() -> list[dict[str, Any]]:
            await twin.step()
            return [e for e in await twin.recent_events(500) if e["kind"] == "alert_firing"]

        fired = await until(alert_firing, timeout_s=180)
        assert {e["subject"] for e in fired} <= {"DGX-01/gpu0", "DGX-01/gpu1"}, "only the host with the fault"
        first = fired[0]
        assert first["severity"] == "critical" and first["data"]["alertname"] == "GpuTooHot"
        assert first["data"]["labels"]["Hostname"] == "DGX-01" and first["data"]["node"] == "DGX-01"
        assert first["data"]["summary"].startswith("DGX-01 GPU ")

        # Prometheus's view of the fleet is the exporters': the same GPUs, read back with their scrape times.
        assert {g for g in prom.gpus if g[0] in HOSTS} == served and not prom.errors
        before = time.time()
        got: list[GpuSample] = []

        async def fresh_reads() -> bool:
            got.extend(s for s in await prom.read() if isinstance(s, GpuSample) and s.node in HOSTS)
            return len({s.name for s in got}) == len(served)

        await until(fresh_reads, timeout_s=30, every_s=0.3)
        assert all(before - 5 < s.ts <= time.time() for s in got), "Unix time of the scrape"
        assert len({(s.name, s.ts) for s in got}) == len(got), "a scrape is read once, never twice"
        assert all(s.model == "H100-SXM" and s.power_limit_w == 700.0 and s.mem_temp_c is None for s in got)
        assert all(float(s.temp_c).is_integer() for s in got if s.temp_c is not None), "whole degrees"
        assert not prom.quarantined
    finally:
        await prom.aclose()


@pytest.mark.anyio
async def test_prometheus_errors_are_recorded_not_raised(chain: Chain) -> None:
    bad = PrometheusSource(chain.prometheus, match='job=~"("')
    try:
        assert await bad.read() == []
        assert "bad_data" in bad.errors[bad.url], bad.errors
    finally:
        await bad.aclose()


@pytest.mark.anyio
async def test_a_stopped_exporter_is_reported_lost_through_prometheus(chain: Chain) -> None:
    src = PrometheusSource(chain.prometheus, lost_after=3)
    spare = {(SPARE, 0), (SPARE, 1)}
    try:
        async def has_spare() -> bool:
            await src.read()
            return spare <= src.gpus

        await until(has_spare, timeout_s=60)
        _stop(chain.spare)
        lost: list[SourceStatus] = []

        async def spare_lost() -> bool:
            lost.extend(s for s in await src.read() if isinstance(s, SourceStatus) and not s.ok)
            return {s.host for s in lost} >= {f"{SPARE}/gpu0", f"{SPARE}/gpu1"}

        await until(spare_lost, timeout_s=60)
        assert all(s.source == "prometheus" and s.missed == 3 for s in lost)
        assert {s.host for s in lost} == {f"{SPARE}/gpu0", f"{SPARE}/gpu1"}, "the other hosts stay"
    finally:
        await src.aclose()
