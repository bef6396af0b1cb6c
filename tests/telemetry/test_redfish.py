"""The Redfish source against a real Redfish server: sushy-tools' static server over DMTF-shaped mockups.

``sushy-static`` serves a mockup folder (``<path>/index.json`` per resource) and reads the file again on every
request, so a test flips a leak detector by rewriting its file in a temp copy of the mockup. Two services: a GPU
server's BMC (node ``n01``) and a CDU (unit ``cdu1``, cooling ``n01``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.agent.incidents import IncidentBook
from actors.agent.planner import plan
from actors.gateway.approvals import open_approval
from actors.twin.model import TwinModel
from cluster.telemetry.redfish import RedfishSource
from cluster.telemetry.samples import CoolingSample, FacilitySample, GpuSample, SourceStatus
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from tests.helpers import free_port
from tests.requirements_check import require

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redfish"
DETECTORS = "Chassis/1/ThermalSubsystem/LeakDetection/LeakDetectors"
START_TIMEOUT_S = 20.0


class StaticRedfish:
    """``sushy-static`` on 127.0.0.1 over a mockup folder; stop and start again on the same port."""

    def __init__(self, mockup: Path) -> None:
        require("redfish")
        self.mockup = mockup
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sushy_tools.static.main", "-i", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.mockup)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/redfish/v1", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sushy-static did not start on {self.url} (exit code {self.proc.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def write(self, path: str, doc: dict | str) -> None:
        """Replace one resource of the mockup (the server serves the new body from the next request on)."""
        body = doc if isinstance(doc, str) else json.dumps(doc, indent=4)
        (self.mockup / path / "index.json").write_text(body)

    def read(self, path: str) -> dict:
        return json.loads((self.mockup / path / "index.json").read_text())


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, StaticRedfish]]:
    servers = {}
    for name in ("bmc", "cdu"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
        servers[name] = StaticRedfish(tmp_path / name)
    try:
        for s in servers.values():
            s.start()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture
def source(services: dict[str, StaticRedfish]) -> Iterator[RedfishSource]:
    clock = iter(range(1_800_000_000, 1_800_100_000, 10))
    yield RedfishSource([f"n01={services['bmc'].url}", f"cdu1={services['cdu'].url}"], timeout_s=2.0,
                        lost_after=3, clock=lambda: float(next(clock)), serves={"cdu1": ["n01"]})


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.bundled(dense=False)


def set_detector(bmc: StaticRedfish, name: str, state: str) -> None:
    doc = bmc.read(f"{DETECTORS}/{name}")
    doc["DetectorState"] = state
    doc["Status"]["Health"] = state
    bmc.write(f"{DETECTORS}/{name}", doc)


@pytest.mark.anyio
async def test_healthy_services_give_their_readings_and_no_event(source: RedfishSource) -> None:
    twin = TwinModel()
    try:
        for _ in range(3):
            samples = await source.read()
            assert twin.ingest(samples) == []
    finally:
        await source.aclose()
    assert source.errors == {}
    node = next(s for s in samples if isinstance(s, FacilitySample) and s.node == "n01")
    assert node.leaks == {"ColdPlate1": "OK", "Manifold1": "OK"} and node.temps_c["Intake"] == 24.8
    assert node.power_w == pytest.approx(4609.5) and node.fans_pct == {"FAN1": 45.0, "FAN2": 47.0}
    cdu = next(s for s in samples if isinstance(s, CoolingSample))
    assert (cdu.unit, cdu.supply_c, cdu.return_c, cdu.setpoint_c, cdu.flow_frac) == ("cdu1", 30.1, 40.2, 30.0,
                                                                                      {"n01": 0.92})
    assert {s.ts for s in samples} == {1_800_000_020.0}, "wall-clock Unix time from the source's clock"
    assert twin.snapshot()["units"][0]["unit"] == "cdu1"


@pytest.mark.anyio
async def test_a_leak_going_critical_is_a_coolant_leak_within_one_poll_and_a_pending_approval(
        source: RedfishSource, services: dict[str, StaticRedfish], kb: KnowledgeBase) -> None:
    twin = TwinModel()
    # n01's GPUs are in the fleet (their telemetry names the host as its BMC is named)
    twin.ingest([GpuSample(ts=1_799_999_999.0, node="n01", gpu=g, temp_c=55.0, power_w=400.0) for g in range(2)])
    try:
        assert twin.ingest(await source.read()) == []
        set_detector(services["bmc"], "ColdPlate1", "Critical")
        events = twin.ingest(await source.read())
        assert twin.ingest(await source.read()) == [], "edge-triggered: a leak that stays wet is one event"
    finally:
        await source.aclose()
    (ev,) = events
    assert (ev.kind, ev.subject, ev.severity) == ("coolant_leak", "n01", "critical")
    assert (ev.data["detector"], ev.data["state"], ev.data["chassis"]) == ("ColdPlate1", "Critical", "1")

    book = IncidentBook()
    inc, needs = book.observe(ev)
    assert inc is not None and needs, "a leak is an incident worth a proposal"
    proposal = plan(inc, kb, twin.topology())
    assert proposal.verified, proposal.problems
    drain = proposal.actions[0]
    assert drain.action.model_dump() == {"kind": "drain_node", "node": "n01"}
    assert (drain.citations[0].doc_id, drain.citations[0].step_id) == ("eop-coolant-leak", "s3")
    policy = load_policy()
    approval = open_approval(proposal, drain, policy.evaluate(drain.action, proposal.emergency), now=ev.ts,
                             expiry_s=policy.expiry_s)
    assert approval.status == "pending" and approval.required == 2, "a human (two, for a drain) decides"


@pytest.mark.anyio
async def test_a_cdu_leak_is_a_coolant_leak_on_the_unit(source: RedfishSource,
                                                        services: dict[str, StaticRedfish]) -> None:
    path = "ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors/DripTray"
    twin = TwinModel()
    try:
        assert twin.ingest(await source.read()) == []
        doc = services["cdu"].read(path)
        doc["DetectorState"] = "Warning"
        services["cdu"].write(path, doc)
        (ev,) = twin.ingest(await source.read())
    finally:
        await source.aclose()
    assert (ev.kind, ev.subject, ev.data["unit"], ev.data["detector"]) == ("coolant_leak", "cdu1", "cdu1", "DripTray")


@pytest.mark.anyio
async def test_a_bmc_that_stops_answering_is_lost_after_n_polls_and_restored_when_back(
        source: RedfishSource, services: dict[str, StaticRedfish]) -> None:
    twin = TwinModel()
    bmc = services["bmc"]
    try:
        twin.ingest(await source.read())
        bmc.stop()
        polls = [twin.ingest(await source.read()) for _ in range(4)]
        assert [[e.kind for e in p] for p in polls] == [[], [], ["telemetry_lost"], []]
        lost = polls[2][0]
        assert (lost.subject, lost.data["source"], lost.data["missed"]) == ("n01", "redfish", 3)
        assert bmc.url in source.errors["n01"]
        bmc.start()
        samples = await source.read()
        (back,) = twin.ingest(samples)
    finally:
        await source.aclose()
    assert (back.kind, back.subject) == ("telemetry_restored", "n01")
    assert any(isinstance(s, FacilitySample) and s.node == "n01" for s in samples)
    assert "n01" not in source.errors


@pytest.mark.anyio
async def test_malformed_json_is_a_clear_error_and_nothing_else_is_lost(
        source: RedfishSource, services: dict[str, StaticRedfish]) -> None:
    bmc = services["bmc"]
    bmc.write(f"{DETECTORS}/Manifold1", '{"Id": "Manifold1", "DetectorState": "OK",')  # a truncated body
    try:
        samples = await source.read()
        node = next(s for s in samples if isinstance(s, FacilitySample) and s.node == "n01")
        assert node.leaks == {"ColdPlate1": "OK"} and node.temps_c["Intake"] == 24.8
        assert "LeakDetectors/Manifold1" in source.errors["n01"] and "invalid JSON" in source.errors["n01"]
        assert not any(isinstance(s, SourceStatus) for s in samples), "the BMC answered: not a miss"
        # a service root that is not JSON is a miss; the CDU goes on
        bmc.write("", "<html>502 Bad Gateway</html>")
        polls = [await source.read() for _ in range(3)]
    finally:
        await source.aclose()
    assert "invalid JSON" in source.errors["n01"]
    lost = [s for s in polls[2] if isinstance(s, SourceStatus)]
    assert [(s.host, s.ok, s.missed) for s in lost] == [("n01", False, 3)]
    assert all(any(isinstance(s, CoolingSample) for s in p) for p in polls)
