"""The Slack approval bot against a local fake Slack Web API, over the real loop on a private Redis.

Signed, forged, stale and replayed requests; Slack users mapped to an approver, a viewer and nobody; the
message posted once per approval and updated after any decision, from Slack or from the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from serving.api import build_app
from serving.slack import RedisSlackStore, SlackConfig, SlackNotifier, build_slack_router
from serving.slack_blocks import APPROVE, REJECT
from tests.serving.test_dashboard_harness import NS, Loop, make_loop, make_users
from tests.serving.test_slack_fake import (
    BOT_TOKEN,
    SECRET,
    FakeSlack,
    blocks_of,
    button_click,
    sign,
    slash,
    view_submission,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]
SLACK_USERS = {"UALICE": "alice", "UCAROL": "carol", "UVICTOR": "victor", "UGHOST": "ghost"}


@dataclass
class Bot:
    loop: Loop
    fake: FakeSlack
    app: FastAPI
    client: httpx.AsyncClient
    notifier: SlackNotifier
    tokens: dict[str, str]

    async def post(self, body: str, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post("/slack/events", content=body, headers=headers)

    async def pending(self) -> dict[str, Any]:
        async def first() -> dict | None:
            found = await self.loop.gateway.list("pending")
            return found[0] if found else None

        return await self.loop.until(first)

    async def approval(self, approval_id: str) -> dict[str, Any]:
        found = await self.loop.gateway.get(approval_id)
        assert found is not None
        return found


async def eventually(predicate: Any, rounds: int = 400) -> Any:
    """Let Bolt's listener (it runs after the ack) finish; ``predicate`` is sync."""
    for _ in range(rounds):
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
async def bot(redis_url: str) -> AsyncIterator[Bot]:
    tokens = make_users(redis_url, {"alice": "approver", "carol": "approver", "victor": "viewer"})
    loop = make_loop(redis_url)
    with FakeSlack() as fake:
        cfg = SlackConfig(bot_token=BOT_TOKEN, signing_secret=SECRET, channel="C0OPS", api_url=fake.url,
                          users=SLACK_USERS)
        router = build_slack_router(loop.gateway, cfg, store=RedisSlackStore(redis_url, NS), twin=loop.twin,
                                    agent=loop.agent, poll=False)
        app = build_app(loop.gateway, loop.twin, loop.agent)
        app.include_router(router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://opsloop") as client:
            yield Bot(loop, fake, app, client, router.notifier, tokens)


def value_of(post: dict[str, Any]) -> str:
    [actions] = [b for b in blocks_of(post) if b["type"] == "actions"]
    return actions["elements"][0]["value"]


async def test_approval_posted_once_with_everything_an_approver_needs(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    assert post["channel"] == "C0OPS" and ap["approval_id"] in post["text"]
    text = json.dumps(blocks_of(post))
    for needed in (ap["summary"], ap["root_cause"]["kind"], "eop-cooling-degradation", "What-if", "Approve", "Reject"):
        assert needed in text, needed
    assert {f"Bearer {BOT_TOKEN}"} >= bot.fake.auth_headers - {""}


async def test_forged_stale_and_replayed_requests_get_401_and_change_nothing(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    body = button_click("UALICE", APPROVE, value_of(post), message_ts="1")

    forged = sign(body, secret="not-the-secret")
    stale = sign(body, ts=int(time.time()) - 6 * 60)
    unsigned = {"content-type": "application/x-www-form-urlencoded"}
    signed_for_another_body = sign(body.replace("UALICE", "UCAROL"))
    for headers in (forged, stale, unsigned, signed_for_another_body):
        r = await bot.post(body, headers)
        assert r.status_code == 401, r.text
    await asyncio.sleep(0.2)
    assert (await bot.approval(ap["approval_id"]))["status"] == "pending"
    assert not bot.fake.of("chat.update") and not bot.fake.of("chat.postEphemeral")

    signed = sign(body)
    assert (await bot.post(body, signed)).status_code == 200
    done = await eventually(lambda: bot.fake.of("chat.update"))
    assert (await bot.approval(ap["approval_id"]))["status"] == "executed"

    replay = await bot.post(body, signed)  # the very same signed request again
    assert replay.status_code == 401
    await asyncio.sleep(0.3)
    after = await bot.approval(ap["approval_id"])
    assert len(after["decisions"]) == 1 and len(bot.fake.of("chat.update")) == len(done) == 1


async def test_signed_click_of_an_approver_executes_once_and_updates_the_message(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    r = await bot.post(body := button_click("UALICE", APPROVE, value_of(post)), sign(body))
    assert r.status_code == 200
    [update] = await eventually(lambda: bot.fake.of("chat.update"))
    after = await bot.approval(ap["approval_id"])
    assert after["status"] == "executed"
    assert after["decisions"][0]["by"] == "alice" and after["decisions"][0]["channel"] == "slack"
    assert update["channel"] == "C0OPS" and update["ts"] == "1700000000.000001"
    shown = json.dumps(blocks_of(update))
    assert "executed" in shown and "alice" in shown and '"actions"' not in shown
    thread = await eventually(
        lambda: [p for p in bot.fake.of("chat.postMessage") if p.get("thread_ts") == update["ts"]])
    assert "executed" in thread[-1]["text"]

    # a second approver clicking the old button is told why nothing happens; the action ran once
    r = await bot.post(body := button_click("UCAROL", APPROVE, value_of(post)), sign(body))
    assert r.status_code == 200
    [told] = await eventually(lambda: bot.fake.of("chat.postEphemeral"))
    assert told["user"] == "UCAROL" and "already executed" in told["text"]
    await bot.loop.turn()
    executed = [e for e in await bot.loop.twin.recent_events(500)
                if e["kind"] == "action_executed" and e["data"].get("approval_id") == ap["approval_id"]]
    assert len(executed) == 1
    audit = await bot.loop.gateway.audit_entries(approval_id=ap["approval_id"])
    assert any(e.get("channel") == "slack" and e.get("actor") == "alice" for e in audit), audit


async def test_users_without_an_approver_role_are_refused(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    for user in ("UNOBODY", "UVICTOR", "UGHOST"):  # unmapped, a viewer, mapped to no opsloop user
        for action in (APPROVE, REJECT):
            r = await bot.post(body := button_click(user, action, value_of(post)), sign(body))
            assert r.status_code == 200  # Slack gets its ack; the user gets the refusal
    told = await eventually(lambda: len(bot.fake.of("chat.postEphemeral")) >= 6 and bot.fake.of("chat.postEphemeral"))
    assert {t["user"] for t in told} == {"UNOBODY", "UVICTOR", "UGHOST"}
    assert all("no opsloop role" in t["text"] for t in told)
    assert (await bot.approval(ap["approval_id"]))["status"] == "pending"
    assert not bot.fake.of("views.open") and not bot.fake.of("chat.update")


async def test_reject_asks_for_a_reason_in_a_modal(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    r = await bot.post(body := button_click("UCAROL", REJECT, value_of(post), message_ts="1700000000.000001"),
                       sign(body))
    assert r.status_code == 200
    [opened] = await eventually(lambda: bot.fake.of("views.open"))
    view = opened["view"] if isinstance(opened["view"], dict) else json.loads(opened["view"])
    meta = view["private_metadata"]

    empty = await bot.post(body := view_submission("UCAROL", meta, "  "), sign(body))
    assert empty.status_code == 200 and "errors" in empty.json()
    assert (await bot.approval(ap["approval_id"]))["status"] == "pending"

    r = await bot.post(body := view_submission("UCAROL", meta, "maintenance is on its way"), sign(body))
    assert r.status_code == 200
    [update] = await eventually(lambda: bot.fake.of("chat.update"))
    after = await bot.approval(ap["approval_id"])
    assert after["status"] == "rejected" and after["decisions"][0]["reason"] == "maintenance is on its way"
    assert "rejected" in json.dumps(blocks_of(update))
    assert (await bot.loop.sim.truth())["setpoint_c"] == [25.0], "a rejected action never runs"


async def test_a_decision_on_the_dashboard_updates_the_slack_message(bot: Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    r = await bot.client.post(f"/api/approvals/{ap['approval_id']}/decision",
                              json={"decision": "approve", "reason": "ok", "action_hash": ap["action_hash"]},
                              headers={"Authorization": f"Bearer {bot.tokens['alice']}"})
    assert r.status_code == 200 and r.json()["status"] == "executed"
    await bot.notifier.step()
    [update] = bot.fake.of("chat.update")
    shown = json.dumps(blocks_of(update))
    # the dashboard decides through the REST API: its channel is that route's
    assert "executed" in shown and "via http" in shown and '"actions"' not in shown
    await bot.notifier.step()
    assert len(bot.fake.of("chat.update")) == 1


async def test_slash_command_status_and_pending(bot: Bot) -> None:
    ap = await bot.pending()
    r = await bot.post(body := slash("UALICE", "pending"), sign(body))
    assert r.status_code == 200 and ap["approval_id"] in r.json()["text"]
    r = await bot.post(body := slash("UVICTOR", "status"), sign(body))
    assert r.status_code == 200 and "Fleet" in r.json()["text"] and "pending 1" in r.json()["text"]
    r = await bot.post(body := slash("UNOBODY", "status"), sign(body))
    assert r.status_code == 200 and "no opsloop role" in r.json()["text"]
    r = await bot.post(body := slash("UALICE", "pending"), sign(body, secret="forged"))
    assert r.status_code == 401


async def test_the_app_lifespan_posts_by_itself(bot: Bot, redis_url: str) -> None:
    with FakeSlack() as fake:
        cfg = SlackConfig(bot_token=BOT_TOKEN, signing_secret=SECRET, channel="C0OPS", api_url=fake.url,
                          users=SLACK_USERS, poll_s=0.05)
        app = FastAPI()
        app.include_router(build_slack_router(bot.loop.gateway, cfg, store=RedisSlackStore(redis_url, "other")))
        async with app.router.lifespan_context(app):
            await bot.pending()
            [post] = await eventually(lambda: fake.of("chat.postMessage"))
        assert post["channel"] == "C0OPS"


class ListGateway:
    def __init__(self, approvals: list[dict]) -> None:
        self.approvals = approvals

    async def list(self, status: str | None = None, limit: int = 500) -> list[dict]:
        return self.approvals


def _ap(aid: str, incident: str, created: float) -> dict:
    return {"approval_id": aid, "incident_id": incident, "status": "pending", "summary": f"do {aid}",
            "action": {"kind": "open_ticket", "summary": "x"}, "action_hash": "0" * 64, "created_ts": created,
            "root_cause": {"kind": "cooling_degraded", "subject": "cu01", "why": "flow"}, "citations": [],
            "decisions": [], "policy": "p", "required": 1, "roles": ["approver"], "rationale": "r"}


async def test_later_approvals_of_an_incident_go_to_its_thread() -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from serving.slack import MemorySlackStore

    with FakeSlack() as fake:
        newest_first = [_ap("ap-3", "inc-2", 3.0), _ap("ap-2", "inc-1", 2.0), _ap("ap-1", "inc-1", 1.0)]
        gw = ListGateway(newest_first)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
        n = SlackNotifier(gw, client, "C0OPS", MemorySlackStore())  # type: ignore[arg-type]
        await n.step()
        first, second, other = fake.of("chat.postMessage")
        assert "ap-1" in first["text"] and "thread_ts" not in first
        assert "ap-2" in second["text"] and second["thread_ts"] == "1700000000.000001" and second["reply_broadcast"]
        assert "ap-3" in other["text"] and "thread_ts" not in other
        await n.step()
        assert len(fake.of("chat.postMessage")) == 3
