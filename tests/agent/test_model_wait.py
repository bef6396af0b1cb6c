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


async def loop(redis_url: str, ns: str, faults: str | list[str], model_pending: bool, batch: int = 100) -> tuple:
    specs = [faults] if isinstance(faults, str) else faults
    sim = SimulatorService(Simulator(Topology.build(2, 4), faults=[Fault.parse(f) for f in specs]), speed=60.0)
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


#: A flow loss whose GPUs settle over max operating but short of slowdown (88 °C at full clock; the plant's steady
#: state supply + R·P(T)): an incident, not an emergency. Half the flow is not that fixture: its steady state is
#: ~91.5 °C, half a degree from shutdown, so whether its first warning projects shutdown is a matter of the
#: projection's last decimal, not of the test's meaning.
NOT_URGENT = "cooling_degradation@5:n01=0.55"
#: The same flow loss, then at 120 s the flow falls to 0.3: the GPUs head for ~110 °C, well past shutdown (92 °C).
TURNS_URGENT = [NOT_URGENT, "cooling_degradation@120:n01=0.3"]


async def test_an_incident_waits_for_the_model_and_the_model_plans_it(redis_url: str) -> None:
    """One event per step: the loop stops the moment the incident is deferred."""
    twin, gateway, agent = await loop(redis_url, "mw", NOT_URGENT, model_pending=True, batch=1)

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
    """The incident waits for the model while its GPUs settle short of slowdown; when the flow falls further and
    the twin projects shutdown, it stops waiting and runs the runbook step's own numbers."""
    twin, gateway, agent = await loop(redis_url, "mw3", TURNS_URGENT, model_pending=True)
    waited: list[bool] = []

    async def proposed() -> bool:
        waited.append(bool(await agent.redis.hlen("mw3:agent:deferred")))
        return bool(await gateway.list())

    await run_until(twin, agent, proposed)
    assert any(waited), "the incident waited for the model before it turned urgent"
    [ap] = [a for a in await gateway.list() if a["action"]["kind"] == "set_cooling_setpoint"]
    assert ap["action"] == {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0}
    stored = Proposal.model_validate_json(await agent.redis.get(f"mw3:agent:proposal:{ap['proposal_id']}"))
    assert stored.emergency and stored.source == "fallback"
    assert await agent.redis.hlen("mw3:agent:deferred") == 0 and agent.llm is None


async def test_without_a_model_coming_the_agent_plans_at_once(redis_url: str) -> None:
    """A fault that is no emergency: planned at once because no model is coming, not because it is urgent."""
    twin, gateway, agent = await loop(redis_url, "mw2", NOT_URGENT, model_pending=False)

    async def proposed() -> bool:
        return bool(await gateway.list("pending"))

    await run_until(twin, agent, proposed)
    [ap, *_] = await gateway.list("pending")
    assert ap["action"]["kind"] == "set_cooling_setpoint" and await agent.redis.hlen("mw2:agent:deferred") == 0

