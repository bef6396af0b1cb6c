"""schemathesis against the running API (uvicorn on loopback, real services on a real Redis): every operation of
``/openapi.json`` with generated valid and invalid requests, as an admin; zero 5xx, zero schema violations."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.twin.physics import Topology
from actors.twin.service import TwinService
from cluster.actuators import SimActuator
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from policies.policy import load_policy
from serving.api import build_app
from serving.chat import ChatService, build_chat_router
from serving.llm import NoModel
from tests.helpers import free_port

pytestmark = [pytest.mark.timeout(600)]
TOKEN = "olp_schemathesis-admin-token-for-tests-only"
STATUS: Counter[int] = Counter()
EXAMPLES = 20  # per operation and mode: bounded, so the run stays short



@pytest.fixture(scope="module")
def api_url(redis_server: str) -> Iterator[str]:
    import redis
    import uvicorn

    redis.Redis.from_url(redis_server).flushall()
    sim = SimulatorService(Simulator(Topology.build(1, 2), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]),
                           speed=60.0)
    twin = TwinService(SimSource(sim), redis_server, "st")
    gateway = GatewayService(redis_server, "st", load_policy(), SimActuator(sim), fleet=twin)
    kb = KnowledgeBase.bundled(dense=False)
    agent = AgentService(redis_server, "st", kb, gateway, twin)
    # The whole API as the ingress mounts it: REST, and the chat behind a viewer token (the model-less backend).
    chat = build_chat_router(ChatService(NoModel(), twin=twin, agent=agent, knowledge=kb))
    app = build_app(gateway, twin, agent, rate_per_s=1e6, burst=1_000_000, routers=[(chat, "viewer")])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))

    async def main() -> None:  # the services' Redis clients live on the server's loop
        await gateway.ensure_token("st-admin", "admin", TOKEN)
        for _ in range(40):  # some state: events, an incident, a pending approval
            await twin.step()
            await agent.step(block_ms=5)
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(10)


def _run(operation: schemathesis.APIOperation, mode: GenerationMode, failures: list[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])
    def run(case: schemathesis.Case) -> None:
        try:
            response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            STATUS[response.status_code] += 1
        except (AssertionError, FailureGroup) as exc:  # a check failed
            failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:600]}")

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_operation_conforms(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, failures)
    print(f"\nschemathesis: {len(operations)} operations, {sum(STATUS.values())} requests, by status "
          f"{dict(sorted(STATUS.items()))}, {len(failures)} failures")
    assert not any(code >= 500 for code in STATUS), STATUS
    assert not failures, "\n".join(failures[:20])


def test_openapi_documents_every_route(api_url: str) -> None:
    doc = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "200" in codes, (method, path)
            if path.startswith("/api/") or path == "/metrics":
                assert {"401", "413", "429"} <= codes, (method, path, codes)
