"""One trace per incident, in one process: sample → event → incident → retrieval → LLM → proposal → approval →
action → feedback → outcome, over the real services on a real Redis; the event log stays deterministic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.tracing import STAGES, incident_timeline, read_spans, stage_span, traceparent_of
from actors.twin.events import Event
from actors.twin.physics import Topology
from actors.twin.service import TwinService, trace_events
from cluster.actuators import SimActuator
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from cluster.tracing import JsonlSpanExporter
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from serving.api import build_app

pytestmark = [pytest.mark.timeout(300)]


class StreamingFake:
    """A model that streams a few pieces (not a valid answer: the agent falls back, after calling it)."""

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, schema: dict | None = None) -> str:
        return "".join([p async for p in self.stream(messages, max_tokens, schema)])

    async def stream(self, messages: list[dict[str, str]], max_tokens: int, schema: dict | None = None):  # noqa: ANN201
        for piece in ("{", '"diagnosis"', ": ", '"hot"', "}"):
            await asyncio.sleep(0.001)
            yield piece


def test_replayed_events_keep_their_bytes_with_tracing_on(spans_dir: Path) -> None:
    ev = Event.make("cooling_degraded", "cu01", 20.0, "warning", {"unit": "cu01"})
    first, again = trace_events([ev], 0), trace_events([ev], 0)
    assert first[0].traceparent and first[0].traceparent.startswith("00-")
    assert first[0].to_json() == again[0].to_json(), "span ids derive from the event id"
    fed_back = ev.model_copy(update={"traceparent": first[0].traceparent, "event_id": "ev-fb"})
    [continued] = trace_events([fed_back], 0)
    assert continued.traceparent.split("-")[1] == first[0].traceparent.split("-")[1], "feedback continues the trace"


def test_a_bad_traceparent_starts_a_new_trace(spans_dir: Path) -> None:
    with stage_span("approval", "t.bad", "test", parent="00-zz-bad") as span:
        assert traceparent_of(span) is not None


def test_jsonl_exporter_keeps_only_opsloop_spans(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    exporter = JsonlSpanExporter(tmp_path)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("opsloop").start_as_current_span("ours", attributes={"opsloop.stage": "event"}):
        with provider.get_tracer("ray").start_as_current_span("theirs"):
            pass
    names = [s["name"] for s in read_spans(tmp_path)]
    assert names == ["ours"]
    (tmp_path / "spans-1.jsonl").write_text('{"trace_id": "ab", "name": "torn"}\n{"trace_id": ')
    assert {s["name"] for s in read_spans(tmp_path)} == {"ours", "torn"}, "a torn last line is skipped"


@pytest.fixture
async def traced_loop(redis_url: str, spans_dir: Path) -> AsyncIterator[tuple]:
    sim = SimulatorService(
        Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]), speed=60.0,
        redis_url=redis_url, state_key="tr:sim",
    )
    twin = TwinService(SimSource(sim), redis_url, "tr")
    gateway = GatewayService(redis_url, "tr", load_policy(), SimActuator(sim), fleet=twin)
    agent = AgentService(redis_url, "tr", KnowledgeBase.bundled(dense=False), gateway, twin, llm=StreamingFake())
    app = build_app(gateway, twin, agent, traces_dir=spans_dir)
    token = (await gateway.create_user("alice", "approver", "test"))["token"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        yield sim, twin, agent, gateway, client


@pytest.mark.anyio
async def test_one_incident_is_one_trace_through_every_stage(traced_loop: tuple, spans_dir: Path) -> None:
    sim, twin, agent, gateway, client = traced_loop

    async def turn() -> None:
        await asyncio.sleep(0.02)
        await twin.step()
        await agent.step(block_ms=10)

    ap = None
    for _ in range(600):
        await turn()
        pending = await gateway.list("pending")
        if pending:
            ap = pending[0]
            break
    assert ap is not None and ap["traceparent"]
    r = await client.post(f"/api/approvals/{ap['approval_id']}/decision",
                          json={"decision": "approve", "reason": "ok", "action_hash": ap["action_hash"]})
    assert r.status_code == 200 and r.json()["status"] == "executed", r.text
    spans: list[dict] = []
    for i in range(1500):  # the twin sees the GPUs recover: the action's observed outcome
        await turn()
        await gateway.check_outcomes()
        if i % 10 == 0:
            spans = incident_timeline(spans_dir, ap["incident_id"])
            if any(s["stage"] == "outcome" for s in spans):
                break
    assert len({s["trace_id"] for s in spans}) == 1, "one incident, one trace"
    first = {}
    for s in spans:
        first.setdefault(s["stage"], s)
    assert set(STAGES) <= set(first), set(STAGES) - set(first)
    starts = [first[st]["start_ns"] for st in STAGES]
    assert starts == sorted(starts), [(st, first[st]["name"]) for st in STAGES]
    by_id = {s["span_id"]: s for s in spans}
    for s in spans:  # every span hangs off the root: one tree
        assert s["parent_id"] is None or s["parent_id"] in by_id, s["name"]
    assert sum(s["parent_id"] is None for s in spans) == 1

    timeline = await client.get(f"/api/traces/{ap['incident_id']}")
    assert timeline.status_code == 200
    body = timeline.json()
    assert body["trace_ids"] == [spans[0]["trace_id"]] and [s["span_id"] for s in body["spans"]] == list(by_id)
    assert (await client.get("/api/traces/inc-nothing")).status_code == 404
    log_bytes = [e.to_json() for e in await twin.log.recent(1000)]
    assert all(json.loads(b)["traceparent"] for b in log_bytes), "every event carries its trace"
