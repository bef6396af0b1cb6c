"""`opsloop up` on real sources: two dcgm-exporters in the real page format (hosts as the fleet names them, one
sticky XID 79 is one event, an exporter that stops answering is `telemetry_lost` within 3 scrapes), a replayed
trace, and a Redfish BMC whose leak detector goes Critical."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.test_up_cli import Up
from tests.telemetry.dcgm_pages import Exporter, Gpu, page

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

H100 = "NVIDIA H100 80GB HBM3"


def test_up_reads_two_dcgm_exporters_and_names_the_one_that_stops(tmp_path: Path) -> None:
    a = Exporter(page("DGX-01", H100, [Gpu(0), Gpu(1)]))
    b = Exporter(page("ip-10-0-1-23.ec2.internal", H100, [Gpu(0), Gpu(1, xid=79)]))
    data = tmp_path / "data"
    up = Up(data, free_port(), "--telemetry", "dcgm", "--dcgm-url", a.url, "--dcgm-url", b.url,
            "--scrape-interval", "1")
    try:
        up.wait_for(lambda: httpx.get(f"{up.url}/healthz", timeout=5).status_code == 200)
        auth = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}

        def events(kind: str) -> list[dict]:
            got = httpx.get(f"{up.url}/api/events", params={"limit": 1000}, headers=auth, timeout=5).json()
            return [e for e in got if e["kind"] == kind]

        def twin() -> dict:
            return httpx.get(f"{up.url}/api/status", headers=auth, timeout=5).json()["twin"]

        def scraped() -> bool:
            st = twin()
            return set(st["nodes"]) == {"DGX-01", "ip-10-0-1-23.ec2.internal"} and st["samples_seen"] >= 24

        up.wait_for(scraped, 120)  # several scrapes of both pages
        xids = up.wait_for(lambda: events("xid_error"), 60)
        assert [(e["subject"], e["data"]["xid"]) for e in xids] == [("ip-10-0-1-23.ec2.internal/gpu1", 79)]
        seen = twin()["samples_seen"]
        up.wait_for(lambda: twin()["samples_seen"] >= seen + 12, 60)
        assert len(events("xid_error")) == 1, "the sticky XID repeats on every page: still one event"
        assert events("telemetry_lost") == []
        everything = httpx.get(f"{up.url}/api/events", params={"limit": 1000}, headers=auth, timeout=5).json()
        fleet = {e["kind"] for e in everything if not e["kind"].startswith("action_")}  # the agent's ticket runs
        assert fleet == {"xid_error"}, "steady whole-degree GPUs raise nothing else"
        b.stop()
        lost = up.wait_for(lambda: events("telemetry_lost"), 60)
        assert [e["subject"] for e in lost] == [b.host] and lost[0]["data"]["missed"] == 3
        ts = lost[0]["ts"]
        assert ts > 1.7e9, "live samples, and their events, carry wall-clock Unix time"
        out = up.stop(signal.SIGINT)
        assert "telemetry  dcgm: 2 exporter(s)" in out and "DGX-01" in out
    finally:
        if up.proc.poll() is None:
            up.stop(signal.SIGINT)
        a.stop()
        b.stop()


def test_up_replays_a_recorded_trace_into_the_same_events(tmp_path: Path) -> None:
    trace = Path(__file__).parents[1] / "scenarios" / "xid79" / "trace.jsonl"
    data = tmp_path / "data"
    up = Up(data, free_port(), "--telemetry", "replay", "--replay", str(trace))  # Up passes --speed 8
    try:
        up.wait_for(lambda: httpx.get(f"{up.url}/healthz", timeout=5).status_code == 200)
        auth = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}

        def xids() -> list[dict]:
            got = httpx.get(f"{up.url}/api/events", params={"limit": 1000}, headers=auth, timeout=5).json()
            return [e for e in got if e["kind"] == "xid_error"]

        got = up.wait_for(xids, 120)
        assert got[0]["data"]["xid"] == 79 and got[0]["ts"] < 200, "a replay keeps the trace's own time"
        out = up.stop(signal.SIGINT)
        assert f"telemetry  replay: {trace} at 8x" in out and "nodes n01, n02" in out
    finally:
        if up.proc.poll() is None:
            up.stop(signal.SIGINT)


def test_up_with_a_redfish_bmc_turns_a_leak_into_a_pending_drain(tmp_path: Path) -> None:
    import shutil

    from tests.telemetry.test_redfish import FIXTURES, StaticRedfish, set_detector

    shutil.copytree(FIXTURES / "bmc", tmp_path / "bmc")
    bmc = StaticRedfish(tmp_path / "bmc")
    bmc.start()
    data = tmp_path / "data"
    up = Up(data, free_port(), "--no-demo-fault", "--redfish-url", f"n01={bmc.url}", "--scrape-interval", "1")
    try:
        up.wait_for(lambda: httpx.get(f"{up.url}/healthz", timeout=5).status_code == 200)
        auth = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}

        def get(path: str, **params: object) -> list[dict]:
            return httpx.get(f"{up.url}{path}", params=params, headers=auth, timeout=5).json()

        up.wait_for(lambda: any(g["gpu"].startswith("n01/") for g in
                                httpx.get(f"{up.url}/api/snapshot", headers=auth, timeout=5).json()["gpus"]), 60)
        assert [e for e in get("/api/events", limit=1000) if e["kind"] == "coolant_leak"] == []
        set_detector(bmc, "ColdPlate1", "Critical")
        leaks = up.wait_for(lambda: [e for e in get("/api/events", limit=1000) if e["kind"] == "coolant_leak"], 60)
        assert [(e["subject"], e["severity"]) for e in leaks] == [("n01", "critical")]
        drains = up.wait_for(lambda: [a for a in get("/api/approvals", status="pending")
                                      if a["action"]["kind"] == "drain_node"], 120)
        assert drains[0]["action"]["node"] == "n01"
        out = up.stop(signal.SIGINT)
        assert "facility   redfish: n01" in out
    finally:
        if up.proc.poll() is None:
            up.stop(signal.SIGINT)
        bmc.stop()
