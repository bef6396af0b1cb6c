"""The Slack approval bot: Bolt (HTTP mode) mounted at ``POST /slack/events`` and a poster of approvals.

- Every request must carry a valid ``v0`` signature made with the signing secret and a timestamp within
  5 minutes (checked here before Bolt sees it, and again by Bolt); a signed request seen before (same
  signature) is a replay. All three get 401 and change nothing.
- A Slack user acts as the opsloop user ``slack_users`` maps them to, with that user's role from the
  gateway: Approve needs a role the approval allows, Reject (a modal asks for the reason) needs approver.
  Decisions go through ``gateway.decide`` with ``channel="slack"``: the same rules and the same audit trail
  as the dashboard and the HTTP API, and one person is one approver whichever channel they use.
- :class:`SlackNotifier` polls the gateway every second: a new pending approval is posted to the channel
  (the first of an incident starts the incident's thread, later ones are threaded there and broadcast); a
  change (a decision from any channel, the execution, the outcome) updates the message and is told in the
  thread.
- What the bot must remember (message ``ts`` per approval, an incident's thread, signatures seen) is in a
  :class:`SlackStore`: :class:`RedisSlackStore` under ``{ns}:slack:*`` so that replicas and restarts share
  it, :class:`MemorySlackStore` for one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from actors.gateway.auth import allows
from serving import slack_blocks as sb

log = logging.getLogger("opsloop.slack")
# slack_sdk logs each request's headers (the bot token) at DEBUG; its client logs here, never below INFO.
_web_log = logging.getLogger("opsloop.slack.web")
_web_log.setLevel(logging.INFO)

POLL_EVERY_S = 1.0
PORT_TIMEOUT_S = 10.0
REPLAY_TTL_S = 600  # longer than the 5-minute window plus clock skew
RECORD_TTL_S = 30 * 86400


class SlackConfig(BaseModel):
    """What the bot needs; built by the composition root from the settings (``slack_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bot_token: SecretStr
    signing_secret: SecretStr
    channel: str = Field(min_length=1)
    api_url: str = "https://slack.com/api/"
    users: dict[str, str] = Field(default_factory=dict, description="Slack user id -> opsloop user name.")
    poll_s: float = Field(POLL_EVERY_S, gt=0)


class Gateway(Protocol):
    async def list(self, status: str | None = None, limit: int = 500) -> list[dict]: ...
    async def get(self, approval_id: str) -> dict | None: ...
    async def decide(self, approval_id: str, decision: dict) -> dict: ...
    async def counts(self) -> dict[str, int]: ...
    async def list_users(self) -> list[dict]: ...


class SlackStore(Protocol):
    """The bot's memory (see the module docstring)."""

    async def first_time(self, signature: str) -> bool:
        """Record a request signature; False if it was seen before (a replay)."""
        ...

    async def claim(self, approval_id: str) -> bool:
        """Reserve posting this approval; False if someone already did."""
        ...

    async def release(self, approval_id: str) -> None:
        """Undo a claim whose post failed."""
        ...

    async def record(self, approval_id: str) -> dict[str, str] | None:
        """``{"channel", "ts", "thread", "version"}`` of the approval's message."""
        ...

    async def save(self, approval_id: str, rec: dict[str, str]) -> None: ...

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        """Move the message's version from ``old`` to ``new``; False if someone else moved it."""
        ...

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        """The incident's thread; with ``ts``, make it the thread unless there is one already."""
        ...


class MemorySlackStore:
    """:class:`SlackStore` in this process (tests, a single replica that may forget on restart)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.records: dict[str, dict[str, str]] = {}
        self.threads: dict[str, str] = {}

    async def first_time(self, signature: str) -> bool:
        fresh = signature not in self.seen
        self.seen.add(signature)
        return fresh

    async def claim(self, approval_id: str) -> bool:
        if approval_id in self.records:
            return False
        self.records[approval_id] = {"version": "posting"}
        return True

    async def release(self, approval_id: str) -> None:
        self.records.pop(approval_id, None)

    async def record(self, approval_id: str) -> dict[str, str] | None:
        return self.records.get(approval_id)

    async def save(self, approval_id: str, rec: dict[str, str]) -> None:
        self.records[approval_id] = dict(rec)

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        rec = self.records.get(approval_id)
        if rec is None or rec.get("version") != old:
            return False
        rec["version"] = new
        return True

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        if ts is not None:
            self.threads.setdefault(incident_id, ts)
        return self.threads.get(incident_id)


_CAS = "if redis.call('hget', KEYS[1], 'version') == ARGV[1] then " \
       "redis.call('hset', KEYS[1], 'version', ARGV[2]) return 1 else return 0 end"


class RedisSlackStore:
    """:class:`SlackStore` in Redis (``{ns}:slack:seen:*``, ``{ns}:slack:msg:*``, ``{ns}:slack:incident:*``)."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.ns = f"{namespace}:slack"

    async def first_time(self, signature: str) -> bool:
        key = f"{self.ns}:seen:{hashlib.sha256(signature.encode()).hexdigest()}"
        return bool(await self.redis.set(key, "1", nx=True, ex=REPLAY_TTL_S))

    async def claim(self, approval_id: str) -> bool:
        key = f"{self.ns}:msg:{approval_id}"
        ok = bool(await self.redis.hsetnx(key, "version", "posting"))
        if ok:
            await self.redis.expire(key, RECORD_TTL_S)
        return ok

    async def release(self, approval_id: str) -> None:
        await self.redis.delete(f"{self.ns}:msg:{approval_id}")

    async def record(self, approval_id: str) -> dict[str, str] | None:
        return await self.redis.hgetall(f"{self.ns}:msg:{approval_id}") or None

    async def save(self, approval_id: str, rec: dict[str, str]) -> None:
        await self.redis.hset(f"{self.ns}:msg:{approval_id}", mapping=rec)

    async def advance(self, approval_id: str, old: str, new: str) -> bool:
        return bool(await self.redis.eval(_CAS, 1, f"{self.ns}:msg:{approval_id}", old, new))

    async def thread(self, incident_id: str, ts: str | None = None) -> str | None:
        key = f"{self.ns}:incident:{incident_id}"
        if ts is not None:
            await self.redis.set(key, ts, nx=True, ex=RECORD_TTL_S)
        return await self.redis.get(key)


def version(ap: dict[str, Any]) -> str:
    """What a message shows of an approval; a different version means the message is out of date."""
    verdict = (ap.get("outcome") or {}).get("verdict", "")
    return f"{ap['status']}|{len(ap.get('decisions', []))}|{ap.get('action_hash', '')[:12]}|{verdict}"


class SlackNotifier:
    """Posts new pending approvals and keeps their messages up to date (see the module docstring)."""

    def __init__(self, gateway: Gateway, client: AsyncWebClient, channel: str, store: SlackStore,
                 every_s: float = POLL_EVERY_S) -> None:
        self.gateway, self.client, self.channel, self.store = gateway, client, channel, store
        self.every_s = every_s
        self._lock = asyncio.Lock()

    async def step(self) -> None:
        """One round over the newest approvals, oldest first."""
        approvals = await asyncio.wait_for(self.gateway.list(None, 100), PORT_TIMEOUT_S)
        for ap in reversed(approvals):
            await self.sync(ap)

    async def sync(self, ap: dict[str, Any]) -> None:
        """Post ``ap`` if it is new and pending, or update its message if it changed."""
        async with self._lock:
            aid = ap["approval_id"]
            rec = await self.store.record(aid)
            if rec is None:
                if ap["status"] == "pending" and await self.store.claim(aid):
                    await self._post(ap)
                return
            old, new = rec.get("version", ""), version(ap)
            if old in ("posting", new) or not await self.store.advance(aid, old, new):
                return
            await self.client.chat_update(channel=rec["channel"], ts=rec["ts"], text=sb.approval_text(ap),
                                          blocks=sb.approval_blocks(ap))
            await self.client.chat_postMessage(channel=rec["channel"], thread_ts=rec["thread"], text=sb.update_text(ap))

    async def _post(self, ap: dict[str, Any]) -> None:
        aid = ap["approval_id"]
        try:
            thread = await self.store.thread(ap["incident_id"])
            resp = await self.client.chat_postMessage(
                channel=self.channel, text=sb.approval_text(ap), blocks=sb.approval_blocks(ap),
                **({"thread_ts": thread, "reply_broadcast": True} if thread else {}),
            )
        except Exception:
            await self.store.release(aid)
            raise
        ts, channel = str(resp["ts"]), str(resp.get("channel") or self.channel)
        thread = thread or await self.store.thread(ap["incident_id"], ts)
        await self.store.save(aid, {"channel": channel, "ts": ts, "thread": thread or ts, "version": version(ap)})

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; failures are logged and retried next round."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - Slack or the gateway may be down for a while
                log.warning("slack sync failed; retrying", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), self.every_s)
            except TimeoutError:
                pass


def build_slack_app(gateway: Gateway, cfg: SlackConfig, client: AsyncWebClient, notifier: SlackNotifier,
                    twin: Any = None, agent: Any = None) -> AsyncApp:
    """The Bolt app: the Approve / Reject buttons, the reject-reason modal and ``/opsloop``."""
    app = AsyncApp(client=client, signing_secret=cfg.signing_secret.get_secret_value(), logger=log)

    async def who(slack_user: str) -> dict[str, str] | None:
        name = cfg.users.get(slack_user)
        if name is None:
            return None
        for u in await asyncio.wait_for(gateway.list_users(), PORT_TIMEOUT_S):
            if u.get("name") == name:
                return {"name": name, "role": str(u.get("role"))}
        return None

    async def tell(body: dict[str, Any], text: str) -> None:
        channel = (body.get("channel") or {}).get("id") or cfg.channel
        await client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=text)

    async def decide(body: dict[str, Any], value: str, decision: str, reason: str) -> None:
        user = await who(body["user"]["id"])
        needed = "approver"
        if user is None or not allows(user["role"], needed):
            await tell(body, "You have no opsloop role that may decide approvals; ask an admin to map your "
                             "Slack user to an opsloop approver.")
            return
        ref = sb.button_ref(value)
        if ref is None:
            await tell(body, "Not done: this button does not name an approval; reload the message.")
            return
        # The channel is this route's (the request's Slack signature was verified); the hash is the one the
        # message showed, so a changed action is refused (stale) instead of approved unseen.
        out = await asyncio.wait_for(gateway.decide(ref["a"], {
            "decision": decision, "reason": reason, "channel": "slack", "action_hash": ref.get("h"),
            "client": f"slack user {body['user']['id']}"[:200], "by": user["name"], "role": user["role"]}),
            PORT_TIMEOUT_S * 4)
        if "refusal" in out:
            await tell(body, f"Not done: {out['refusal']['message']}")
        ap = out.get("approval") or await gateway.get(ref["a"])
        if ap is not None:
            await notifier.sync(ap)

    @app.action(sb.APPROVE)
    async def approve(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        await decide(body, action["value"], "approve", "")

    @app.action(sb.REJECT)
    async def reject(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        user = await who(body["user"]["id"])
        if user is None or not allows(user["role"], "approver"):
            await tell(body, "You have no opsloop role that may decide approvals.")
            return
        message = {"channel": (body.get("channel") or {}).get("id", ""),
                   "ts": (body.get("message") or {}).get("ts", "")}
        await client.views_open(trigger_id=body["trigger_id"], view=sb.reject_view(action["value"], message))

    @app.view(sb.REJECT_VIEW)
    async def reject_reason(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = (view["state"]["values"][sb.REASON_BLOCK][sb.REASON_BLOCK].get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={sb.REASON_BLOCK: "A rejection needs a reason."})
            return
        await ack()
        meta = json.loads(view["private_metadata"])
        await decide({**body, "channel": {"id": meta["m"].get("channel") or cfg.channel}}, meta["v"], "reject", reason)

    @app.command("/opsloop")
    async def command(ack: Any, body: dict[str, Any], command: dict[str, Any]) -> None:
        user = await who(command["user_id"])
        if user is None or not allows(user["role"], "viewer"):
            await ack(text="You have no opsloop role; ask an admin to map your Slack user to an opsloop user.",
                      response_type="ephemeral")
            return
        word = (command.get("text") or "").strip().split(" ")[0].lower()
        if word == "status":
            twin_status = await asyncio.wait_for(twin.status(), PORT_TIMEOUT_S) if twin is not None else None
            agent_status = await asyncio.wait_for(agent.status(), PORT_TIMEOUT_S) if agent is not None else {}
            text = sb.status_text(twin_status, await gateway.counts(), agent_status.get("open_incidents", []))
        elif word == "pending":
            text = sb.pending_text(await gateway.list("pending"))
        else:
            text = "Usage: `/opsloop status` (fleet, approvals, incidents) or `/opsloop pending` (what waits)."
        await ack(text=text, response_type="ephemeral")

    return app


def _bolt_can_parse(body: bytes) -> bool:
    """False for a UTF-8 body Bolt would choke on: a ``payload`` field that is not a JSON object."""
    form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
    if "payload" not in form:
        return True
    try:
        return isinstance(json.loads(form["payload"][0]), dict)
    except ValueError:
        return False


def build_slack_router(
    gateway: Gateway, cfg: SlackConfig, client: AsyncWebClient | None = None, store: SlackStore | None = None,
    twin: Any = None, agent: Any = None, poll: bool = True,
) -> APIRouter:
    """``POST /slack/events`` and, while the app runs (its lifespan), the notifier's poll loop.

    Args:
        gateway: the gateway port (``list``, ``get``, ``decide``, ``counts``, ``list_users``).
        cfg: tokens, channel and the Slack user mapping.
        client: the Web API client; default: one for ``cfg.api_url`` with the bot token.
        store: the bot's memory; default: in this process (pass :class:`RedisSlackStore` under Serve).
        twin, agent: ports for ``/opsloop status``.
        poll: run the notifier's loop during the app's lifespan.
    """
    client = client or AsyncWebClient(token=cfg.bot_token.get_secret_value(), base_url=cfg.api_url, logger=_web_log)
    store = store or MemorySlackStore()
    notifier = SlackNotifier(gateway, client, cfg.channel, store, cfg.poll_s)
    handler = AsyncSlackRequestHandler(build_slack_app(gateway, cfg, client, notifier, twin, agent))
    verifier = SignatureVerifier(cfg.signing_secret.get_secret_value())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop)) if poll else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task

    router = APIRouter(tags=["slack"], lifespan=lifespan)
    router.notifier = notifier  # type: ignore[attr-defined] - reachable for tests and the ingress

    @router.post("/slack/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        """Slack's interactivity, slash-command and event requests (signed, fresh, never replayed)."""
        body = await request.body()
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:  # Slack sends UTF-8; the signature check itself would choke on anything else
            return JSONResponse({"error": {"code": "bad_request", "message": "body is not UTF-8"}}, status_code=400)
        ts = request.headers.get("x-slack-request-timestamp", "")
        sig = request.headers.get("x-slack-signature", "")
        if not (ts.isdigit() and sig and verifier.is_valid(body, ts, sig)):
            log.warning("refused a Slack request with a bad signature or a stale timestamp")
            return JSONResponse({"error": {"code": "unauthorized", "message": "invalid signature"}}, status_code=401)
        if not await store.first_time(sig):
            log.warning("refused a replayed Slack request")
            return JSONResponse({"error": {"code": "unauthorized", "message": "replayed request"}}, status_code=401)
        if not _bolt_can_parse(body):  # Bolt parses `payload=` as JSON and assumes an object
            return JSONResponse({"error": {"code": "bad_request", "message": "payload is not a JSON object"}},
                                status_code=400)
        return await handler.handle(request)

    return router
