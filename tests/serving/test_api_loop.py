"""The REST API over the real twin, agent and gateway services in one process, on a real Redis.

Drives the loop of issue 2 without Ray: simulator → twin → event log → agent → gateway → API → actuator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

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

pytestmark = [pytest.mark.timeout(180), pytest.mark.anyio]

USERS = {"alice": "approver", "bob": "approver", "carol": "approver", "vera": "viewer", "oscar": "operator",
         **{f"op{i}": "approver" for i in range(5)}}


@dataclass
class Loop:
    sim: SimulatorService
    twin: TwinService
    agent: AgentService
    gateway: GatewayService
    client: httpx.AsyncClient
    tokens: dict[str, str]

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def turn(self) -> None:
        await asyncio.sleep(0.05)
        await self.twin.step()
        await self.agent.step(block_ms=10)

    async def until(self, predicate, turns: int = 600):  # noqa: ANN001, ANN201
        for _ in range(turns):
            await self.turn()
            result = await predicate()
            if result:
                return result
        raise AssertionError("condition not reached")


@pytest.fixture
async def loop(redis_url: str) -> AsyncIterator[Loop]:
    sim = SimulatorService(
        Simulator(Topology.build(2, 4), faults=[Fault.parse("cooling_degradation@5:n01=0.5")]), speed=60.0,
        redis_url=redis_url, state_key="t:sim",
    )
    twin = TwinService(SimSource(sim), redis_url, "t")
    gateway = GatewayService(redis_url, "t", load_policy(), SimActuator(sim), fleet=twin)  # as deployed
    agent = AgentService(redis_url, "t", KnowledgeBase.bundled(dense=False), gateway, twin)
    app = build_app(gateway, twin, agent)
    tokens = {"admin": (await gateway.create_user("admin", "admin", "test"))["token"]}
    for name, role in USERS.items():
        tokens[name] = (await gateway.create_user(name, role, "admin"))["token"]
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop",
                                 headers=headers) as client:
        yield Loop(sim, twin, agent, gateway, client, tokens)


async def pending(loop: Loop) -> list[dict]:
    return (await loop.client.get("/api/approvals", params={"status": "pending"})).json()


async def test_fault_to_approval_to_execution_to_cooling(loop: Loop) -> None:
    assert (await loop.client.get("/healthz")).status_code == 200
    [ap] = await loop.until(lambda: pending(loop))
    assert ap["action"]["kind"] == "set_cooling_setpoint" and ap["citations"][0]["doc_id"] == "eop-cooling-degradation"

    async def crossed() -> bool:  # let the sensors cross the line the fix must bring them back under
        snap = await loop.twin.snapshot()
        return all(g["sensed_c"] >= g["max_operating_c"] for g in snap["gpus"] if g["node"] == "n01")

    await loop.until(crossed)
    resp = await loop.client.post(f"/api/approvals/{ap['approval_id']}/decision", headers=loop.auth("alice"),
                                  json={"decision": "approve", "reason": "cool it", "action_hash": ap["action_hash"]})
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["status"] == "executed" and "cu01 supply setpoint" in done["result"]["detail"]
    assert done["decisions"][0]["by"] == "alice"

    # The card's what-if, judged by the gateway against the twin: the runbook's 2–4 °C cannot bring half the
    # flow's GPUs under max operating (they would cross it again and again on the throttling cycle), it keeps
    # their dies short of slowdown; that claim, and the plant following the new setpoint, are what is checked.
    async def judged() -> dict | None:
        await loop.gateway.check_outcomes()
        return (await loop.client.get(f"/api/approvals/{ap['approval_id']}")).json()["outcome"]

    outcome = await loop.until(judged, turns=1500)
    assert outcome["verdict"] == "met", outcome

    async def followed() -> bool:  # the plant (the simulator's truth, not the twin) takes the new setpoint
        truth = await loop.sim.truth()
        target = ap["action"]["supply_c"]
        return truth["setpoint_c"] == [target] and truth["supply_c"][0] < target + 0.5

    await loop.until(followed, turns=1500)
    kinds = (await loop.client.get("/api/status")).json()["twin"]["events_by_kind"]
    assert kinds.get("action_executed", 0) >= 1 and kinds.get("gpu_overheat", 0) >= 1


async def test_bad_decisions_get_clear_4xx_and_change_nothing(loop: Loop) -> None:
    [ap] = await loop.until(lambda: pending(loop))
    url = f"/api/approvals/{ap['approval_id']}/decision"
    bad_bodies = [
        b"{not json",
        b'{"decision": "maybe"}',
        b'{"decision": "approve", "extra": 1}',
        b'{"decision": "reject"}',
        b'{"decision": "approve", "by": "someone-else"}',
        b"[]",
    ]
    for body in bad_bodies:
        r = await loop.client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "bad_request" and r.json()["error"]["message"]
    r = await loop.client.post("/api/approvals/ap-doesnotexist/decision",
                               json={"decision": "approve", "action_hash": ap["action_hash"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await loop.client.get(f"/api/approvals/{ap['approval_id']}")).json()["status"] == "pending"

    r = await loop.client.post(url, json={"decision": "reject", "reason": "not now", "action_hash": ap["action_hash"]},
                               headers=loop.auth("bob"))
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = await loop.client.post(url, json={"decision": "approve", "action_hash": ap["action_hash"]},
                               headers=loop.auth("carol"))
    assert r.status_code == 409 and "already rejected" in r.json()["error"]["message"]
    after = (await loop.client.get(f"/api/approvals/{ap['approval_id']}")).json()
    assert after["status"] == "rejected" and after["result"] is None and len(after["decisions"]) == 1
    truth = await loop.sim.truth()
    assert truth["setpoint_c"] == [25.0], "a rejected action never runs"


async def test_concurrent_approvals_execute_once(loop: Loop) -> None:
    [ap] = await loop.until(lambda: pending(loop))
    url = f"/api/approvals/{ap['approval_id']}/decision"
    answers = await asyncio.gather(
        *(loop.client.post(url, json={"decision": "approve", "action_hash": ap["action_hash"]},
                           headers=loop.auth(f"op{i}")) for i in range(5))
    )
    assert sorted(r.status_code for r in answers) == [200, 409, 409, 409, 409]
    await loop.turn()
    counts = (await loop.client.get("/api/status")).json()["twin"]["events_by_kind"]
    executed_for_it = [e for e in await loop.twin.recent_events(500)
                       if e["kind"] == "action_executed" and e["data"]["approval_id"] == ap["approval_id"]]
    assert len(executed_for_it) == 1 and counts["action_executed"] >= 1


async def test_agent_restart_resumes_without_duplicate_proposals(loop: Loop, redis_url: str) -> None:
    await loop.until(lambda: pending(loop))
    before = await loop.gateway.list()
    fresh = AgentService(redis_url, "t", KnowledgeBase.bundled(dense=False), loop.gateway, loop.twin)
    for _ in range(20):
        await loop.twin.step()
        await fresh.step(block_ms=10)
        await asyncio.sleep(0.05)
    after = await loop.gateway.list()
    assert [a["approval_id"] for a in after] == [a["approval_id"] for a in before]


async def test_tokens_roles_and_audit_of_every_decision(loop: Loop) -> None:
    [ap] = await loop.until(lambda: pending(loop))
    url = f"/api/approvals/{ap['approval_id']}/decision"
    async with httpx.AsyncClient(transport=loop.client._transport, base_url="http://opsloop") as anon:
        assert (await anon.get("/healthz")).status_code == 200, "health stays open"
        for method, path in (("GET", "/api/approvals"), ("GET", "/api/status"), ("POST", url)):
            r = await anon.request(method, path, json={"decision": "approve"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (path, r.text)
        r = await anon.get("/api/approvals", headers={"Authorization": "Bearer olp_forged"})
        assert r.status_code == 401
    viewer = loop.auth("vera")
    assert (await loop.client.get("/api/approvals", headers=viewer)).status_code == 200
    assert (await loop.client.get("/api/me", headers=viewer)).json() == {"name": "vera", "role": "viewer"}
    r = await loop.client.post(url, json={"decision": "approve", "action_hash": ap["action_hash"]}, headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await loop.client.post(url, json={"decision": "approve", "action_hash": ap["action_hash"]},
                               headers=loop.auth("oscar"))
    assert r.status_code == 403, "an operator edits but does not decide"
    assert (await loop.client.get("/api/users", headers=loop.auth("alice"))).status_code == 403
    assert (await loop.client.get(f"/api/approvals/{ap['approval_id']}")).json()["status"] == "pending"

    # An operator edits; the edited action is judged again and the editor cannot approve it.
    r = await loop.client.post(f"/api/approvals/{ap['approval_id']}/edit", headers=loop.auth("oscar"),
                               json={"params": {"supply_c": 5}, "reason": "colder"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    r = await loop.client.post(f"/api/approvals/{ap['approval_id']}/edit", headers=loop.auth("oscar"),
                               json={"params": {"supply_c": 14.0}, "reason": "colder", "channel": "dashboard"})
    assert r.status_code == 400 and "channel" in r.json()["error"]["message"], "a client does not claim a channel"
    r = await loop.client.post(f"/api/approvals/{ap['approval_id']}/edit", headers=loop.auth("oscar"),
                               json={"params": {"supply_c": 14.0}, "reason": "colder"})
    assert r.status_code == 200 and r.json()["action"]["supply_c"] == 14.0 and r.json()["proposer"] == "oscar"
    edited = r.json()
    r = await loop.client.post(url, json={"decision": "approve", "action_hash": ap["action_hash"]},
                               headers=loop.auth("alice"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "stale", "alice saw the action before the edit"
    r = await loop.client.post(url, json={"decision": "approve", "channel": "slack",
                                          "action_hash": edited["action_hash"]}, headers=loop.auth("alice"))
    assert r.status_code == 400 and "channel" in r.json()["error"]["message"]
    r = await loop.client.post(url, json={"decision": "approve", "action_hash": edited["action_hash"]},
                               headers=loop.auth("alice"))
    assert r.status_code == 200 and r.json()["status"] == "executed"
    assert r.json()["decisions"][0]["by"] == "alice" and r.json()["decisions"][0]["channel"] == "http"

    entries = (await loop.client.get("/api/audit", params={"incident": ap["incident_id"]}, headers=viewer)).json()
    mine = [(e["type"], e["actor"], e["channel"]) for e in entries if e["approval_id"] == ap["approval_id"]]
    assert mine == [("proposal", "agent", "agent"), ("edit", "oscar", "http"), ("decision", "alice", "http"),
                    ("execution", "alice", "http")]
    assert (await loop.client.get("/api/audit/verify")).json()["ok"]

    created = await loop.client.post("/api/users", json={"name": "dave", "role": "approver"})
    assert created.status_code == 200 and created.json()["token"].startswith("olp_")
    me = await loop.client.get("/api/me", headers={"Authorization": f"Bearer {created.json()['token']}"})
    assert me.json() == {"name": "dave", "role": "approver"}
    assert "token" not in json.dumps((await loop.client.get("/api/users")).json())
