"""The Slack bot's poster: new pending approvals go to the channel, and their messages follow every change.

:class:`SlackNotifier` polls the gateway every second: a new pending approval is posted to the channel (the
first of an incident starts the incident's thread, later ones are threaded there and broadcast); a change (a
decision from any channel, the execution, the outcome) updates the message and is told in the thread. What
it posted is remembered in a :class:`~serving.slack_store.SlackStore`, so replicas and restarts neither post
twice nor tell a change twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from serving import slack_blocks as sb
from serving.ports import Gateway
from serving.slack_config import POLL_EVERY_S, PORT_TIMEOUT_S
from serving.slack_store import SlackStore

log = logging.getLogger("opsloop.slack")


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
