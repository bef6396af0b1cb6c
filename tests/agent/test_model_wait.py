"""An agent whose model is still starting lets incidents wait for it (issue #15: the model plans the demo fault),
except emergencies; ``set_llm`` plans what waited, and nothing is lost across the wait."""

from __future__ import annotations

import asyncio

import pytest

from actors.agent.proposals import Proposal
from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from tests.agent.test_propose import COOL, Scripted, answer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def loop(redis_url: str, ns: str, fault: str, model_pending: bool, batch: int = 100) -> tuple:
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse(fault)]), speed=60.0)
    twin = TwinService(SimSource(sim), redis_url, ns)
    gateway = GatewayService(redis_url, ns, load_policy(), SimActuator(sim), fleet=twin)
    agent = AgentService(redis_url, ns, KnowledgeBase.bundled(dense=False), gateway, twin, model_pending=model_pending,
                         batch=batch)
    return twin, gateway, agent


async def run_until(twin: TwinService, agent: AgentService, done, turns: int = 600) -> None:  # noqa: ANN001
    for _ in range(turns):
        await asyncio.sleep(0.02)
        await twin.step()
        await agent.step(block_ms=10)
        if await done():
            return


async def test_an_incident_waits_for_the_model_and_the_model_plans_it(redis_url: str) -> None:
    """One event per step: the loop stops the moment the incident is deferred, before it turns urgent."""
    twin, gateway, agent = await loop(redis_url, "mw", "cooling_degradation@5:n01=0.5", model_pending=True, batch=1)

    async def deferred() -> bool:
        return bool(await agent.redis.hlen("mw:agent:deferred"))

    await run_until(twin, agent, deferred, turns=3000)
    assert await deferred(), "the incident was deferred"
    assert await gateway.list() == [], "nothing is proposed before the model is there"
    model = Scripted(answer({**COOL, "params": {"unit": "cu01", "supply_c": 21.0}, "rationale": "model words"}))
    await agent.set_llm(lambda: model)
    [ap] = [a for a in await gateway.list() if a["action"]["kind"] == "set_cooling_setpoint"]
    assert model.prompts, "the model was asked"
    assert ap["rationale"] == "[model text] model words", "the model's answer, labelled"
    assert ap["action"]["supply_c"] == 21.0 and ap["bounds"]["supply_c"]["text"].startswith("21–23 °C")
    assert await agent.redis.hlen("mw:agent:deferred") == 0


async def test_a_waiting_incident_that_turns_urgent_is_planned_at_once(redis_url: str) -> None:
    """Half the coolant flow projects shutdown within seconds: the incident stops waiting for the model and runs
    the runbook step's own numbers."""
    twin, gateway, agent = await loop(redis_url, "mw3", "cooling_degradation@5:n01=0.5", model_pending=True)

    async def proposed() -> bool:
        return bool(await gateway.list())

    await run_until(twin, agent, proposed)
    [ap, *_] = await gateway.list()
    assert ap["action"] == {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0}
    stored = Proposal.model_validate_json(await agent.redis.get(f"mw3:agent:proposal:{ap['proposal_id']}"))
    assert stored.emergency and stored.source == "fallback"
    assert await agent.redis.hlen("mw3:agent:deferred") == 0 and agent.llm is None


async def test_without_a_model_coming_the_agent_plans_at_once(redis_url: str) -> None:
    twin, gateway, agent = await loop(redis_url, "mw2", "cooling_degradation@5:n01=0.5", model_pending=False)

    async def proposed() -> bool:
        return bool(await gateway.list("pending"))

    await run_until(twin, agent, proposed)
    [ap, *_] = await gateway.list("pending")
    assert ap["action"]["kind"] == "set_cooling_setpoint" and await agent.redis.hlen("mw2:agent:deferred") == 0

