"""Feedback: an operator's rejection comes back through the twin as an event; the agent records the decided
incident as experience and re-plans once, never re-proposing what was already proposed."""

from __future__ import annotations

import asyncio

import pytest

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def test_rejection_comes_back_as_an_event_and_becomes_experience(redis_url: str) -> None:
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]),
                           speed=60.0)
    twin = TwinService(MergedSource(SimSource(sim), FeedbackSource(redis_url, "fb")), redis_url, "fb")
    gateway = GatewayService(redis_url, "fb", load_policy(), SimActuator(sim), fleet=twin)
    kb = KnowledgeBase.bundled(dense=False)
    agent = AgentService(redis_url, "fb", kb, gateway, twin)

    async def turn() -> None:
        await asyncio.sleep(0.05)
        await twin.step()
        await agent.step(block_ms=10)

    pending: list[dict] = []
    for _ in range(600):
        await turn()
        pending = await gateway.list("pending")
        if pending:
            break
    [ap] = pending
    out = await gateway.decide(ap["approval_id"], {"decision": "reject", "by": "alice", "role": "approver",
                                                   "channel": "http", "action_hash": ap["action_hash"],
                                                   "reason": "flow sensor is wrong, checking the strainer first"})
    assert out.approval is not None and out.approval.status == "rejected"
    kinds: list[str] = []
    for _ in range(100):
        await turn()
        kinds = [e["kind"] for e in await twin.recent_events(500)]
        if "action_rejected" in kinds and kb.document(f"exp-{ap['incident_id']}"):
            break
    rejected = [e for e in await twin.recent_events(500) if e["kind"] == "action_rejected"]
    assert rejected and rejected[0]["data"]["detail"].startswith("flow sensor is wrong")
    exp = kb.document(f"exp-{ap['incident_id']}")
    assert exp is not None and exp.type == "experience"
    assert "strainer" in exp.body and "rejected" in exp.body.lower()
    hits = kb.search("flow sensor wrong strainer rejected cooling setpoint", top_k=5)
    assert any(h.citation.doc_id == exp.doc_id for h in hits), "the experience is retrievable at once"
    # Re-planned once with the runbook mapping only: nothing new to offer, so nothing is proposed again.
    approvals = await gateway.list()
    assert [a["approval_id"] for a in approvals if a["action"]["kind"] == "set_cooling_setpoint"] == [ap["approval_id"]]
    assert (await sim.truth())["setpoint_c"] == [25.0]
