"""``/metrics`` over the real services: parses with Prometheus's text parser, every listed metric present."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.metrics import Metrics
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from serving.api import build_app
from serving.metrics import merge, render
from tests.observability.test_tracing import StreamingFake

pytestmark = [pytest.mark.timeout(300)]

LISTED = {  # the list: samples/s and quarantined per source, events/s by kind, incidents open, approvals by
    # state, decision latency, actions by outcome, barrier wait, LLM TTFT and tokens/s, retrieval latency
    "opsloop_samples": "counter", "opsloop_samples_quarantined": "counter", "opsloop_events": "counter",
    "opsloop_incidents_open": "gauge", "opsloop_approvals": "gauge", "opsloop_decision_latency_seconds": "histogram",
    "opsloop_actions": "counter", "opsloop_barrier_wait_seconds": "histogram", "opsloop_llm_ttft_seconds": "histogram",
    "opsloop_llm_tokens_per_second": "histogram", "opsloop_retrieval_latency_seconds": "histogram",
}


def test_merge_adds_counters_and_histograms_of_processes() -> None:
    a, b = Metrics(), Metrics()
    for m in (a, b):
        m.inc("opsloop_samples_total", 2, source="sim")
        m.observe("opsloop_retrieval_latency_seconds", 0.002)
    b.set("opsloop_incidents_open", 3)
    merged = merge([a.dump(), b.dump()])
    [counter] = merged["opsloop_samples_total"]["series"].values()
    [hist] = merged["opsloop_retrieval_latency_seconds"]["series"].values()
    assert counter["value"] == 4 and hist["count"] == 2 and hist["buckets"][-1][1] == 2
    fams = {f.name: f for f in text_string_to_metric_families(render([a.dump(), b.dump()]).decode())}
    assert set(LISTED) <= set(fams)
    with pytest.raises(KeyError):
        a.inc("opsloop_not_in_catalogue")


@pytest.mark.anyio
async def test_metrics_endpoint_shows_the_whole_loop(redis_url: str) -> None:
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]),
                           speed=60.0, redis_url=redis_url, state_key="m:sim")
    twin = TwinService(SimSource(sim), redis_url, "m")
    gateway = GatewayService(redis_url, "m", load_policy(), SimActuator(sim), fleet=twin)
    agent = AgentService(redis_url, "m", KnowledgeBase.bundled(dense=False), gateway, twin, llm=StreamingFake())
    app = build_app(gateway, twin, agent)
    token = (await gateway.create_user("alice", "approver", "test"))["token"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        ap = None
        for _ in range(600):
            await asyncio.sleep(0.02)
            await twin.step()
            await agent.step(block_ms=10)
            pending = await gateway.list("pending")
            if pending:
                ap = pending[0]
                break
        assert ap is not None
        r = await client.post(f"/api/approvals/{ap['approval_id']}/decision",
                              json={"decision": "approve", "action_hash": ap["action_hash"]})
        assert r.status_code == 200
        assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
        resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(resp.text)}
    missing = {n for n, kind in LISTED.items() if n not in fams or fams[n].type != kind}
    assert not missing, missing
    value = {(f.name, s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert value[("opsloop_samples", "opsloop_samples_total", (("source", "sim"),))] > 0
    assert value[("opsloop_events", "opsloop_events_total", (("kind", "cooling_degraded"),))] == 1
    assert value[("opsloop_actions", "opsloop_actions_total", (("outcome", "executed"),))] >= 1
    assert value[("opsloop_approvals", "opsloop_approvals", (("state", "executed"),))] >= 1
    assert value[("opsloop_incidents_open", "opsloop_incidents_open", ())] >= 1
    assert value[("opsloop_decision_latency_seconds", "opsloop_decision_latency_seconds_count", ())] == 1
    assert value[("opsloop_retrieval_latency_seconds", "opsloop_retrieval_latency_seconds_count", ())] >= 1
    assert value[("opsloop_llm_ttft_seconds", "opsloop_llm_ttft_seconds_count", ())] >= 1
    assert value[("opsloop_llm_tokens_per_second", "opsloop_llm_tokens_per_second_count", ())] >= 1
