"""Shared by the dashboard and Slack tests (no tests here): the real loop in-process, users, a live server.

The loop is the one of ``test_api_loop``: simulator → sharded twin (two in-process shards, so the barrier
reports) → event log → agent → gateway → simulated actuator, all on a private real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import APIRouter, FastAPI

from actors.agent.service import AgentService
from actors.gateway.service import GatewayService
from actors.gateway.users import UserStore
from actors.twin.physics import Topology
from actors.twin.shard_service import TwinCoordinator, TwinShard
from cluster.actuators import SimActuator
from cluster.sources import SimSource
from cluster.telemetry.sim import Fault, Simulator, SimulatorService
from knowledge.retrieval import KnowledgeBase
from tests.helpers import free_port

log = logging.getLogger("tests.loop")
NS = "t"
_KB: KnowledgeBase | None = None


def knowledge() -> KnowledgeBase:
    """The bundled corpus with BM25 only, built once per test session."""
    global _KB
    if _KB is None:
        _KB = KnowledgeBase.bundled(dense=False)
    return _KB


@dataclass
class Loop:
    """The loop's services, driven by :meth:`turn` (or :meth:`drive` in the background)."""

    sim: SimulatorService
    twin: TwinCoordinator
    agent: AgentService
    gateway: GatewayService
    kb: KnowledgeBase

    async def turn(self) -> None:
        await asyncio.sleep(0.05)
        await self.twin.step()
        await self.agent.step(block_ms=10)

    async def until(self, predicate: Any, turns: int = 1200) -> Any:
        for _ in range(turns):
            await self.turn()
            result = await predicate()
            if result:
                return result
        raise AssertionError("condition not reached")

    async def drive(self, stop: asyncio.Event) -> None:
        """Turn until ``stop`` (a failing turn is logged; the next one retries)."""
        while not stop.is_set():
            try:
                await self.turn()
            except Exception:  # noqa: BLE001 - keep the test's loop going like the actors do
                log.exception("loop turn failed")


def make_loop(redis_url: str, speed: float = 60.0) -> Loop:
    """Two nodes of four GPUs, the coolant flow to n01 halves at 5 simulated seconds."""
    topo = Topology.build(2, 4)
    sim = SimulatorService(Simulator(topo, faults=[Fault.parse("cooling_degradation@5:n01=0.5")]), speed=speed,
                           redis_url=redis_url, state_key=f"{NS}:sim")
    layout = {f"s{i}": [n] for i, n in enumerate(topo.nodes)}
    shards = {s: TwinShard(s, nodes, redis_url=redis_url, namespace=NS) for s, nodes in layout.items()}
    twin = TwinCoordinator(SimSource(sim), shards.__getitem__, layout, redis_url, NS)
    gateway = GatewayService(redis_url, NS, _policy(), SimActuator(sim), fleet=twin)
    agent = AgentService(redis_url, NS, knowledge(), gateway, twin)
    return Loop(sim, twin, agent, gateway, knowledge())


def _policy() -> Any:
    from policies.policy import load_policy

    return load_policy()


def make_users(redis_url: str, users: dict[str, str]) -> dict[str, str]:
    """Create ``name -> role`` users (on a loop of their own); returns ``name -> token``."""

    async def create() -> dict[str, str]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = UserStore(client, NS)
            return {name: (await store.create(name, role, "test", time.time()))[1] for name, role in users.items()}
        finally:
            await client.aclose()

    out: dict[str, str] = {}
    # its own thread, so it works whether or not the caller's thread already runs an event loop
    worker = threading.Thread(target=lambda: out.update(asyncio.run(create())))
    worker.start()
    worker.join()
    return out


def driver(loop: Loop) -> APIRouter:
    """A router whose lifespan drives the loop in the server's event loop."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(loop.drive(stop))
        try:
            yield
        finally:
            stop.set()
            await task

    return APIRouter(lifespan=lifespan)



class LiveServer:
    """``app`` served by uvicorn on a loopback port in a thread (with its lifespan)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
