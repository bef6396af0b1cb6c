"""The Slack approval bot's endpoint: Bolt (HTTP mode) mounted at ``POST /slack/events``, and its poller.

- Every request must carry a valid ``v0`` signature made with the signing secret and a timestamp within
  5 minutes (checked here before Bolt sees it, and again by Bolt); a signed request seen before (same
  signature) is a replay. All three get 401 and change nothing; a body that is not UTF-8, or whose
  ``payload`` is not a JSON object, gets 400.
- What the bot does with a verified request (buttons, the reject modal, ``/opsloop``) is ``serving.slack_app``;
  posting approvals and keeping their messages up to date is ``serving.slack_notifier`` (its poll loop runs
  during the app's lifespan); what the bot remembers is ``serving.slack_store``; the messages themselves are
  ``serving.slack_blocks``; the config and the gateway port are ``serving.slack_config``.

The names callers use are importable from here: :func:`build_slack_router`, :class:`SlackConfig`,
:class:`SlackNotifier`, :class:`MemorySlackStore` and :class:`RedisSlackStore`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from serving.ports import Gateway
from serving.slack_app import build_slack_app
from serving.slack_config import SlackConfig
from serving.slack_notifier import SlackNotifier
from serving.slack_store import MemorySlackStore, RedisSlackStore, SlackStore

__all__ = ["MemorySlackStore", "RedisSlackStore", "SlackConfig", "SlackNotifier", "SlackStore", "build_slack_router"]

log = logging.getLogger("opsloop.slack")
# slack_sdk logs each request's headers (the bot token) at DEBUG; its client logs here, never below INFO.
_web_log = logging.getLogger("opsloop.slack.web")
_web_log.setLevel(logging.INFO)


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
