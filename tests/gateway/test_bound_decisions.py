"""Decisions bound to what was shown, on every channel (issue 13, item 6), through the real gateway on a real Redis
and the REST API: a stale or missing action hash is 409 and decides nothing; the audit's channel is the route's,
never the body's; the gateway verifies a proposal again on submit and records a refusal as data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from actors.agent.incidents import RootCause
from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway.approvals import STALE, Approval
from actors.gateway.service import GatewayService
from policies.actions import parse_action
from policies.policy import load_policy
from serving.api import build_app
from serving.slack_blocks import button_ref, button_value
from tests.gateway.test_service import CountingActuator, FakeFleet

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COOL = {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18.0}
TOKENS = {"alice": "olp_alice-test-token", "oscar": "olp_oscar-test-token", "root": "olp_root-test-token"}


def proposal(*actions: dict, verified: bool = True, pid: str = "pr-1", problems: tuple[str, ...] = ()) -> Proposal:
    pas = tuple(ProposedAction(action_id=f"act-{pid}-{i}", action=parse_action(a), citations=(), rationale="t")
                for i, a in enumerate(actions))
    return Proposal(proposal_id=pid, incident_id=f"inc-{pid}", ts=1.0, root_cause=RootCause(kind="k", subject="s",
                    why="w"), diagnosis="d", actions=pas, source="fallback", verified=verified, problems=problems,
                    confidence=0.5)


@dataclass
class Api:
    gw: GatewayService
    act: CountingActuator
    client: httpx.AsyncClient

    def auth(self, user: str, agent: str = "test-client/1.0") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[user]}", "User-Agent": agent}

    async def decide(self, approval_id: str, user: str = "alice", **body: object) -> httpx.Response:
        return await self.client.post(f"/api/approvals/{approval_id}/decision",
                                      json={"decision": "approve", **body}, headers=self.auth(user))

    async def open(self, p: Proposal) -> list[Approval]:
        """The approvals a submitted proposal opened."""
        replies = await self.gw.submit(p)
        assert all(r.approval is not None for r in replies), replies
        return [r.approval for r in replies]  # type: ignore[misc]


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[Api]:
    act = CountingActuator()
    gw = GatewayService(redis_url, "bd", load_policy(), act, fleet=FakeFleet())
    await gw.ensure_token("alice", "approver", TOKENS["alice"])
    await gw.ensure_token("oscar", "operator", TOKENS["oscar"])
    await gw.ensure_token("root", "admin", TOKENS["root"])
    app = build_app(gw, None, None)  # type: ignore[arg-type] - approvals and the audit need only the gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as client:
        yield Api(gw, act, client)


async def test_approving_an_edited_action_with_the_old_hash_is_409_and_stays_pending(api: Api) -> None:
    [ap] = await api.open(proposal(COOL))
    edited = await api.client.post(f"/api/approvals/{ap.approval_id}/edit", headers=api.auth("oscar"),
                                   json={"params": {"supply_c": 16}, "reason": "colder"})
    assert edited.status_code == 200 and edited.json()["action_hash"] != ap.action_hash, edited.text

    stale = await api.decide(ap.approval_id, action_hash=ap.action_hash)  # what alice saw before the edit
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale"
    assert STALE in stale.json()["error"]["message"]
    after = await api.gw.get(ap.approval_id)
    assert after is not None and after["status"] == "pending" and after["decisions"] == [] and api.act.calls == []
    trail = await api.gw.audit_entries(approval_id=ap.approval_id)
    assert [(e["type"], e["channel"]) for e in trail] == [("proposal", "agent"), ("edit", "http")]

    done = await api.decide(ap.approval_id, action_hash=edited.json()["action_hash"])  # the action as it is now
    assert done.status_code == 200 and done.json()["status"] == "executed", done.text
    decision = [e for e in await api.gw.audit_entries(approval_id=ap.approval_id) if e["type"] == "decision"]
    [d] = decision
    assert (d["actor"], d["channel"]) == ("alice", "http"), "the route's channel, whoever the client says it is"
    assert d["payload"]["client"] == "test-client/1.0" and d["payload"]["action_hash"] == edited.json()["action_hash"]
    assert done.json()["decisions"][0]["channel"] == "http"


async def test_a_decision_without_a_hash_is_409_and_decides_nothing(api: Api) -> None:
    [ap] = await api.open(proposal(COOL))
    for body in ({}, {"action_hash": None}):
        r = await api.decide(ap.approval_id, **body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "stale", r.text
        assert "reload" in r.json()["error"]["message"]
    r = await api.decide(ap.approval_id, decision="reject", reason="no")
    assert r.status_code == 409
    assert (await api.gw.get(ap.approval_id))["status"] == "pending" and api.act.calls == []  # type: ignore[index]
    assert [e["type"] for e in await api.gw.audit_entries(approval_id=ap.approval_id)] == ["proposal"]
    gone = await api.decide("ap-nope")
    assert gone.status_code == 404, "an unknown approval is named as such first"


async def test_a_client_cannot_claim_a_channel_or_send_a_malformed_hash(api: Api) -> None:
    [ap] = await api.open(proposal(COOL))
    claimed = await api.decide(ap.approval_id, action_hash=ap.action_hash, channel="slack")
    assert claimed.status_code == 400 and "channel" in claimed.json()["error"]["message"], claimed.text
    for path, body in ((f"/api/approvals/{ap.approval_id}/edit", {"params": {"supply_c": 16}, "reason": "r",
                                                                      "channel": "cli"}),
                       ("/api/users", {"name": "zed", "role": "viewer", "channel": "dashboard"})):
        r = await api.client.post(path, json=body, headers=api.auth("root"))
        assert r.status_code == 400 and "channel" in r.json()["error"]["message"], r.text
    made = await api.client.post("/api/users", json={"name": "zed", "role": "viewer"}, headers=api.auth("root"))
    assert made.status_code == 200
    [user] = [e for e in await api.gw.audit_entries() if e["type"] == "user" and e["payload"]["name"] == "zed"]
    assert user["channel"] == "http"
    bad = await api.decide(ap.approval_id, action_hash="not-a-hash")
    assert bad.status_code == 400 and "action_hash" in bad.json()["error"]["message"]
    assert (await api.gw.get(ap.approval_id))["status"] == "pending" and api.act.calls == []  # type: ignore[index]


async def test_the_gateway_refuses_an_unverified_proposal_as_data(api: Api) -> None:
    unverified = proposal(COOL, verified=False, problems=("citation x#1 was not among the retrieved passages",))
    refused = [r.as_json() for r in await api.gw.submit(unverified)]
    assert [r["refusal"]["code"] for r in refused] == ["invalid"]
    assert "did not verify" in refused[0]["refusal"]["message"] and "citation x#1" in refused[0]["refusal"]["message"]
    assert await api.gw.list() == [] and api.act.calls == []
    assert [r.as_json() for r in await api.gw.submit(unverified)] == refused, "a resubmitted proposal is refused again"
    [entry] = await api.gw.audit_entries(incident_id="inc-pr-1")
    assert (entry["type"], entry["actor"], entry["payload"]["status"]) == ("proposal", "agent", "refused")
    assert entry["proposal_id"] == "pr-1" and entry["payload"]["actions"] == [COOL]
    assert (await api.gw.audit_verify()).ok


async def test_the_gateway_checks_the_actions_against_the_fleet_itself(api: Api) -> None:
    """The agent's ``verified`` flag is not taken on trust: a target the fleet does not have is refused."""
    ghost = {"kind": "set_power_limit", "gpu": "n09/gpu3", "watts": 300.0}
    refused = await api.gw.submit(proposal(COOL, ghost, pid="pr-2"))
    assert len(refused) == 2 and all(r.refusal and "n09/gpu3" in r.refusal.message for r in refused)
    assert await api.gw.list() == [] and api.act.calls == []
    [entry] = await api.gw.audit_entries(incident_id="inc-pr-2")
    assert entry["payload"]["status"] == "refused" and entry["payload"]["agent_verified"] is True
    [ok] = await api.open(proposal(COOL, pid="pr-3"))
    assert ok.status == "pending"


def test_a_slack_button_carries_the_hash_it_shows() -> None:
    value = button_value({"approval_id": "ap-1", "action_hash": "ab" * 32})
    assert button_ref(value) == {"a": "ap-1", "h": "ab" * 32}
    assert button_ref('{"a": "ap-1"}') == {"a": "ap-1", "h": None}, "no hash: the gateway refuses it (stale)"
    for junk in ("", "null", "[1]", '{"h": "x"}', '{"a": 3}', "{"):
        assert button_ref(junk) is None
