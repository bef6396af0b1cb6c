"""The Slack bot's Bolt app: the Approve / Reject buttons, the reject-reason modal and ``/opsloop``.

A Slack user acts as the opsloop user ``SlackConfig.users`` maps them to, with that user's role from the
gateway: Approve needs a role the approval allows, Reject (a modal asks for the reason) needs approver.
Decisions go through ``gateway.decide`` with ``channel="slack"``: the same rules and the same audit trail as
the dashboard and the HTTP API, and one person is one approver whichever channel they use. After a decision
the notifier brings the approval's message up to date. ``serving.slack`` mounts the app behind its
signature, freshness and replay checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from actors.gateway.auth import allows
from serving import slack_blocks as sb
from serving.ports import Gateway
from serving.slack_config import PORT_TIMEOUT_S, SlackConfig
from serving.slack_notifier import SlackNotifier

log = logging.getLogger("opsloop.slack")


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
        if out.refusal is not None:
            await tell(body, f"Not done: {out.refusal.message}")
        ap = out.as_json()["approval"] if out.approval is not None else await gateway.get(ref["a"])
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
