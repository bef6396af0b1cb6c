"""The agent correlates Alertmanager's alerts with the twin's events: an alert on a node joins the incident of that
node's twin events (same window), an alert first is joined by the measurements that follow, and a measured cause
outranks it. Last, the whole path: HTTP POST → inbox → ``AlertSource`` → twin → event log → agent.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest

from actors.agent.incidents import IncidentBook
from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.twin.events import Event
from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.actuators.feedback import MergedSource
from cluster.sources import SimSource
from cluster.telemetry.alerts import AlertSource
from cluster.telemetry.samples import AlertSample
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from serving.alerts import PATH, AlertReceiver
from serving.api import build_app
from tests.serving.test_alerts import PAYLOAD

pytestmark = [pytest.mark.timeout(180)]
TOKEN = "correlation-test-token-0123"


def alert(ts: float, node: str = "n01", gpu: int | None = 1, name: str = "GpuTooHot", status: str = "firing",
          fingerprint: str = "00000000000000f1", starts_at: float | None = None) -> AlertSample:
    start = starts_at if starts_at is not None else ts
    return AlertSample(ts=ts, alertname=name, status=status, severity="critical", node=node, gpu=gpu,  # type: ignore[arg-type]
                       labels={"alertname": name, "Hostname": node}, starts_at=start,
                       ends_at=ts if status == "resolved" else None, fingerprint=fingerprint, summary="GPU is hot")


def run(book: IncidentBook, events: list[Event]) -> list[tuple[Any, bool]]:
    return [book.observe(e) for e in events]


def cooling_fault(seconds: int = 120) -> tuple[TwinModel, list[Event]]:
    sim = Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@20:n01=0.5")])
    twin = TwinModel()
    return twin, [e for _ in range(seconds) for e in twin.ingest(sim.step())]


def test_an_alert_on_a_node_joins_the_incident_of_its_twin_events() -> None:
    twin, events = cooling_fault()
    book = IncidentBook()
    run(book, events)
    [inc] = book.open.values()
    assert inc.root_cause.kind == "cooling_degraded"
    last = max(e.ts for e in events)
    [fire] = twin.ingest([alert(last)])
    joined, needs = book.observe(fire)
    assert joined is inc and not needs, "the twin's incident takes the alert in; no new proposal"
    assert inc.kinds["alert_firing"] == 1 and "n01/gpu1 (GpuTooHot)" in inc.hot
    assert inc.root_cause.kind == "cooling_degraded", "a measured cause outranks a monitoring rule"
    other, other_needs = book.observe(twin.ingest([alert(last, node="n02", fingerprint="00000000000000f2")])[0])
    assert other is not None and other is not inc and other.key == "node:n02" and other_needs
    assert other.root_cause.kind == "alert_firing" and "GpuTooHot fires on n02/gpu1" in other.root_cause.why
    [done] = twin.ingest([alert(last + 5, status="resolved", starts_at=last)])
    assert book.observe(done)[0] is inc and "n01/gpu1 (GpuTooHot)" not in inc.hot and inc.status == "open"


def test_an_alert_outside_the_window_opens_a_new_incident() -> None:
    twin, events = cooling_fault()
    book = IncidentBook(window_s=900)
    run(book, events)
    [inc] = book.open.values()
    late, _ = book.observe(twin.ingest([alert(max(e.ts for e in events) + 901)])[0])
    assert late is not inc and inc.status == "closed" and late is not None and late.root_cause.kind == "alert_firing"


def test_measurements_that_follow_an_alert_join_it_and_outrank_it() -> None:
    twin, events = cooling_fault()
    book = IncidentBook()
    first, needs = book.observe(TwinModel().ingest([alert(15.0)])[0])  # before the twin knows who cools n01
    assert first is not None and needs and first.key == "node:n01"
    out = run(book, events)
    assert {inc.incident_id for inc, _ in out if inc} == {first.incident_id}, "one incident, the alert's"
    assert first.root_cause.kind == "cooling_degraded" and first.revision == 2, "re-planned on the measured cause"
    assert list(book.open) == ["unit:cu01"] and "n01/gpu1 (GpuTooHot)" in first.hot


def test_two_alerts_on_one_node_resolve_one_by_one() -> None:
    book = IncidentBook()
    a = TwinModel().ingest([alert(10.0, gpu=None, name="NodeHot", fingerprint="a1"),
                            alert(11.0, gpu=None, name="FanSlow", fingerprint="a2")])
    inc = [book.observe(e)[0] for e in a][-1]
    assert inc is not None and inc.hot == ["n01 (NodeHot)", "n01 (FanSlow)"]
    book.observe(TwinModel().ingest([alert(20.0, gpu=None, name="NodeHot", fingerprint="a1", status="resolved",
                                           starts_at=10.0)])[0])
    assert inc.hot == ["n01 (FanSlow)"] and inc.status == "open"
    book.observe(TwinModel().ingest([alert(21.0, gpu=None, name="FanSlow", fingerprint="a2", status="resolved",
                                           starts_at=11.0)])[0])
    assert inc.status == "resolved" and not book.open


class Shifted:
    """The simulator's samples on a Unix time line (live sources and the receiver both run on Unix time)."""

    def __init__(self, source: Any, by: float) -> None:
        self.source, self.by = source, by

    async def read(self) -> list:
        return [s.model_copy(update={"ts": s.ts + self.by}) for s in await self.source.read()]


@pytest.mark.anyio
async def test_posted_alerts_reach_the_agent_beside_the_twins_events(redis_url: str) -> None:
    t0, ns = 1_700_000_000.0, "ac"
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]),
                           speed=60.0)
    twin = TwinService(MergedSource(Shifted(SimSource(sim), t0), AlertSource(redis_url, ns)), redis_url, ns)
    gateway = GatewayService(redis_url, ns, load_policy(), SimActuator(sim), fleet=twin)
    agent = AgentService(redis_url, ns, KnowledgeBase.bundled(dense=False), gateway, twin)
    app = build_app(gateway, twin, agent, alerts=AlertReceiver(redis_url, ns, TOKEN))

    async def until(predicate: Any, turns: int = 600) -> Any:
        for _ in range(turns):
            await asyncio.sleep(0.05)
            await twin.step()
            await agent.step(block_ms=10)
            if found := await predicate():
                return found
        raise AssertionError("condition not reached")

    async def incidents() -> list[dict]:
        return (await agent.status())["open_incidents"]

    [inc] = await until(incidents)
    body = copy.deepcopy(PAYLOAD)
    starts = (await twin.status())["ts"]
    body["alerts"] = [{**body["alerts"][0], "labels": {"alertname": "GpuTooHot", "Hostname": "n01", "gpu": "1"},
                       "startsAt": f"{_iso(starts)}"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as c:
        posted = await c.post(PATH, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        again = await c.post(PATH, json=body, headers={"Authorization": f"Bearer {TOKEN}"})  # re-sent
    assert posted.status_code == again.status_code == 200

    async def joined() -> dict | None:
        return next((i for i in await incidents() if "n01/gpu1 (GpuTooHot)" in i["hot"]), None)

    found = await until(joined)
    assert found["incident_id"] == inc["incident_id"], "the alert is in the twin's incident"
    kinds = [e["kind"] for e in await twin.recent_events(500)]
    assert kinds.count("alert_firing") == 1, "a re-sent alert is one event"


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
