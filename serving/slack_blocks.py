"""What the Slack bot says: Block Kit messages for approvals, thread updates and the ``/opsloop`` answers.

Pure functions of the gateway's approval dicts (no IO), so the wording is tested without Slack.
"""

from __future__ import annotations

import json
import time
from typing import Any

APPROVE = "opsloop_approve"
REJECT = "opsloop_reject"
REJECT_VIEW = "opsloop_reject_reason"
REASON_BLOCK = "reason"
MAX_TEXT = 2900  # Slack caps a section's text at 3000 characters


def _clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


def describe_action(action: dict[str, Any]) -> str:
    """``kind(param=value, …)``."""
    params = ", ".join(f"{k}={v}" for k, v in action.items() if k != "kind")
    return f"{action.get('kind', '?')}({params})"


def describe_source(ap: dict[str, Any]) -> str:
    """Who chose the action: the model (inside the cited step's bounds), the runbook mapping, or an operator undoing
    an earlier action."""
    if ap.get("source") == "operator":
        return f"{ap.get('proposer')}, undoing {ap.get('undo_of') or 'an earlier action'}"
    if ap.get("source") != "llm":
        return "the runbook mapping (no model)"
    numbers = "; its numbers are the step's own (emergency)" if ap.get("emergency") else ""
    return f"the model, inside the cited step's bounds{numbers} (its words are marked [model text])"


#: What a card says for an approval with no stated effect (opened before effects were stated, or denied at once).
NO_EFFECT = "not stated for this approval"


def describe_effect(ap: dict[str, Any]) -> str:
    """What approving it will run: the exact call, where, the value now and the new one, as its actuator stated it
    when the approval opened (or was edited); the same text is in the audit entry."""
    return str((ap.get("effect") or {}).get("text") or NO_EFFECT)


def _escaped(text: str) -> str:
    """Text for mrkdwn: Slack reads ``&``, ``<`` and ``>`` as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def describe_prediction(p: dict[str, Any] | None) -> str:
    """The what-if an approval carries, in words."""
    if not p:
        return "no prediction attached"
    bounds = " and ".join(b for b in (
        f"below {p['below']}" if p.get("below") is not None else "",
        f"above {p['above']}" if p.get("above") is not None else "",
    ) if b)
    return f"{p.get('metric')} of {p.get('subject')} {bounds} within {p.get('within_s')} s"


def bounds_text(bounds: dict[str, Any] | None) -> str:
    """Each number of the action beside the range its cited step (and the hardware) allows."""
    return "\n".join(f"{k}: {b.get('text', '')}" for k, b in (bounds or {}).items()) or "no numbers to bound"


def citations_text(citations: list[dict[str, Any]]) -> str:
    """One line per cited runbook step."""
    lines = [f"• `{c['doc_id']}`{' § ' + c['step_id'] if c.get('step_id') else ''} — {c.get('title', '')}"
             for c in citations]
    return "\n".join(lines) or "none"


def decisions_text(ap: dict[str, Any]) -> str:
    """Who decided what, through which channel and when."""
    return "\n".join(
        f"{'✓' if d['decision'] == 'approve' else '✗'} {d['by']} ({d.get('role', '?')}) via {d['channel']} at "
        f"{_when(d.get('ts'))}{': ' + d['reason'] if d.get('reason') else ''}"
        for d in ap.get("decisions", [])
    )


def button_value(ap: dict[str, Any]) -> str:
    """What a button carries: the approval and the hash of the action it shows (a changed action is refused)."""
    return json.dumps({"a": ap["approval_id"], "h": ap["action_hash"]}, separators=(",", ":"))


def button_ref(value: str) -> dict[str, str | None] | None:
    """The ``{"a": approval id, "h": action hash or None}`` a button's value carries; None when it names no
    approval (a value that is not ours). The hash is sent to the gateway as the decision's ``action_hash``."""
    try:
        ref = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("a"), str) or not ref["a"]:
        return None
    h = ref.get("h")
    return {"a": ref["a"], "h": h if isinstance(h, str) and h else None}


def approval_text(ap: dict[str, Any]) -> str:
    """The plain-text fallback (notifications, screen readers)."""
    return f"[{ap['status']}] {ap['summary']} (approval {ap['approval_id']})"


def approval_blocks(ap: dict[str, Any]) -> list[dict[str, Any]]:
    """The approval message: summary, what it will run, root cause, action, citations, what-if and, while pending,
    the buttons."""
    rc = ap.get("root_cause") or {}
    cause = f"{rc.get('kind', '?')} on {rc.get('subject', '?')}" + (f": {rc['why']}" if rc.get("why") else "")
    head = "Approval needed" if ap["status"] == "pending" else f"Approval {ap['status']}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"{head}: {ap['summary']}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Will run*\n{_escaped(describe_effect(ap))}")}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Root cause*\n{_clip(cause, 1900)}"},
            {"type": "mrkdwn", "text": f"*Action*\n`{_clip(describe_action(ap['action']), 1900)}`"},
            {"type": "mrkdwn", "text": f"*Allowed by the step*\n{_clip(bounds_text(ap.get('bounds')), 1900)}"},
            {"type": "mrkdwn", "text": f"*Proposed by*\n{describe_source(ap)}"},
            {"type": "mrkdwn", "text": f"*What-if*\n{describe_prediction(ap.get('prediction'))}"},
            {"type": "mrkdwn", "text": f"*Policy*\n{_clip(ap.get('policy', ''), 1900)}"
                                       f" ({ap.get('required', 0)} approver(s): {', '.join(ap.get('roles', []))})"},
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Why*\n{ap.get('rationale', '')}")}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _clip(f"*Citations*\n{citations_text(ap.get('citations', []))}")}},
    ]
    if ap["status"] == "pending":
        value = button_value(ap)
        blocks.append({"type": "actions", "block_id": f"decide:{ap['approval_id']}", "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    else:
        lines = [f"*Status:* {ap['status']}"]
        if ap.get("decisions"):
            lines.append(decisions_text(ap))
        if ap.get("result"):
            lines.append(f"*Result:* {ap['result'].get('status', '')} {ap['result'].get('detail', '')}")
        if ap.get("outcome"):
            lines.append(f"*Outcome:* {ap['outcome'].get('verdict')} (observed {ap['outcome'].get('observed')})")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}})
    where = f"approval `{ap['approval_id']}` · incident `{ap.get('incident_id', '?')}`"
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"{where} · opened {_when(ap.get('created_ts'))}"}]})
    return blocks


def update_text(ap: dict[str, Any]) -> str:
    """The thread reply for a change of an approval."""
    text = f"`{ap['approval_id']}` {ap['summary']} is now *{ap['status']}*"
    if ap.get("decisions"):
        last = ap["decisions"][-1]
        text += f" — {last['decision']} by {last['by']} via {last['channel']}"
        if last.get("reason"):
            text += f": {last['reason']}"
    if ap.get("result"):
        text += f"\nresult: {ap['result'].get('status', '')} {ap['result'].get('detail', '')}"
    if ap.get("outcome"):
        text += f"\noutcome: {ap['outcome'].get('verdict')}"
    return _clip(text)


def reject_view(ap_value: str, message: dict[str, str] | None) -> dict[str, Any]:
    """The modal asking for a rejection's reason (it goes back to the agent)."""
    meta = json.dumps({"v": ap_value, "m": message or {}}, separators=(",", ":"))
    return {
        "type": "modal", "callback_id": REJECT_VIEW, "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Reject action"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{"type": "input", "block_id": REASON_BLOCK, "label": {"type": "plain_text", "text": "Reason"},
                    "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True,
                                "max_length": 2000}}],
    }


def status_text(twin: dict[str, Any] | None, counts: dict[str, int], incidents: list[dict[str, Any]]) -> str:
    """The answer to ``/opsloop status``."""
    lines = []
    if twin:
        lines.append(f"*Fleet:* {twin.get('gpus', '?')} GPUs on {len(twin.get('nodes', []))} nodes, "
                     f"{len(twin.get('hot_gpus', []))} hot, max sensed {twin.get('max_sensed_c', '?')} °C")
    lines.append("*Approvals:* " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    for i in incidents[:10]:
        rc = i.get("root_cause", {})
        lines.append(f"• incident `{i.get('incident_id')}`: {rc.get('kind')} on {rc.get('subject')}")
    return "\n".join(lines)


def pending_text(pending: list[dict[str, Any]]) -> str:
    """The answer to ``/opsloop pending``."""
    if not pending:
        return "Nothing waits for a decision."
    return "\n".join(f"• `{a['approval_id']}` {a['summary']} — {(a.get('root_cause') or {}).get('kind', '?')} "
                     f"(policy: {a.get('policy', '')})" for a in pending[:20])
