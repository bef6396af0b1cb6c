"""Feedback of a failure: an action the actuator could not carry out comes back through the twin as
``action_failed``, and the agent re-plans the incident once, telling the model the action FAILED and why (an
operator's rejection is told as REJECTED; an outcome miss is recorded, not re-planned)."""

from __future__ import annotations

import asyncio

import pytest

from actors.agent.service import AgentService, replan_after
from actors.gateway.service import GatewayService
from actors.twin.events import Event
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import RoutedActuator, SimActuator, WebhookActuator
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.actuators.http_retry import RetryPolicy
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from tests.actuators.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def feedback(kind: str, detail: str) -> Event:
    return Event.make(kind, "cu01", 10.0, "warning", {"action_id": "act-1", "detail": detail})  # type: ignore[arg-type]


def test_the_agent_replans_after_a_rejection_or_an_actuators_failure_not_after_a_miss() -> None:
    assert replan_after(feedback("action_rejected", "not now")) == "rejected"
    assert replan_after(feedback("action_failed", "webhook answered 422")) == "failed"
    assert replan_after(feedback("action_failed", "outcome missed: expected below 83 °C, observed 86")) is None
    assert replan_after(feedback("action_executed", "cu01 supply setpoint 25.0 -> 22.0 °C")) is None


class Recording:
    """A model that answers nothing usable (the runbook mapping stands), recording every prompt it is shown."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, schema: dict | None = None) -> str:
        self.prompts.append(messages[-1]["content"] if len(messages) == 2 else "(repair)")
        return "no answer"


async def test_an_actuators_failure_comes_back_and_the_agent_replans_saying_it_failed(redis_url: str) -> None:
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]),
                           speed=60.0)
    twin = TwinService(MergedSource(SimSource(sim), FeedbackSource(redis_url, "ff")), redis_url, "ff")
    with WebhookReceiver() as plant:
        plant.always = 422  # the cooling plant's hook refuses the write: a permanent failure, not retried
        hook = WebhookActuator(plant.url, 5.0, retry=RetryPolicy(attempts=1, total_s=5.0))
        gateway = GatewayService(redis_url, "ff", load_policy(), RoutedActuator(SimActuator(sim), hook), fleet=twin)
        model = Recording()
        agent = AgentService(redis_url, "ff", KnowledgeBase.bundled(dense=False), gateway, twin, llm=model)

        async def turn() -> None:
            await asyncio.sleep(0.05)
            await twin.step()
            await agent.step(block_ms=10)

        pending: list[dict] = []
        for _ in range(600):
            await turn()
            pending = [a for a in await gateway.list("pending") if a["action"]["kind"] == "set_cooling_setpoint"]
            if pending:
                break
        [ap] = pending
        first = len(model.prompts)
        assert first and not any("FAILED" in p for p in model.prompts)
        out = await gateway.decide(ap["approval_id"], {"decision": "approve", "by": "alice", "role": "approver",
                                                       "channel": "http", "action_hash": ap["action_hash"]})
        assert out.approval is not None and out.approval.status == "failed"
        assert "422" in out.approval.result["detail"] and len(plant.deliveries) == 1  # type: ignore[index]
        for _ in range(100):
            await turn()
            if len(model.prompts) > first + 1:
                break
    replanned = [p for p in model.prompts[first:] if p != "(repair)"]
    assert replanned, "the agent did not re-plan after the failure"
    assert "The previous proposal's action FAILED when it was carried out; the actuator said:" in replanned[0]
    assert "422" in replanned[0] and "REJECTED" not in replanned[0]
    failed = [e for e in await twin.recent_events(500) if e["kind"] == "action_failed"]
    assert [e["data"]["approval_id"] for e in failed] == [ap["approval_id"]]
    assert (await sim.truth())["setpoint_c"] == [25.0], "the failed write changed the plant"
    # Re-planned once: the runbook mapping offers nothing new for a failed kind and target.
    approvals = await gateway.list()
    assert [a["approval_id"] for a in approvals if a["action"]["kind"] == "set_cooling_setpoint"] == [ap["approval_id"]]
