"""``opsloop approvals list|show|approve|reject|edit``: decide from the terminal, through the HTTP API.

Decisions are made as the token's user (the admin token of `opsloop up` on this machine unless
``OPSLOOP_ADMIN_TOKEN`` names another) and recorded with channel ``cli``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cluster.cli import CliError
from cluster.cli._http import add_connection_flags, api, connection_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approvals", help="list, approve, reject or edit pending actions",
                       description="List approvals and decide them, through the API of a running `opsloop up`.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="list approvals (newest first)")
    ls.add_argument("--status", help="only this state (pending, executed, rejected, …)")
    ls.add_argument("--json", action="store_true", help="print a JSON array (id, status, action, …)")
    ls.set_defaults(func=_list)
    show = verbs.add_parser("show", help="show one approval as JSON")
    show.add_argument("id")
    show.set_defaults(func=_show)
    for verb in ("approve", "reject"):
        v = verbs.add_parser(verb, help=f"{verb} one approval (as the token's user)")
        v.add_argument("id", help="approval id (ap-…)")
        v.add_argument("--reason", required=verb == "reject", default="", help="why (required to reject)")
        v.add_argument("--json", action="store_true", help="print the approval as JSON")
        v.set_defaults(func=_decide, decision=verb)
    ed = verbs.add_parser("edit", help="change a pending action's parameters (judged again; approvals reset)")
    ed.add_argument("id", help="approval id (ap-…)")
    ed.add_argument("--set", dest="params", action="append", required=True, metavar="KEY=VALUE",
                    help="a parameter to change, e.g. --set supply_c=14 (repeatable; values parse as JSON)")
    ed.add_argument("--reason", required=True, help="why the change")
    ed.add_argument("--json", action="store_true", help="print the approval as JSON")
    ed.set_defaults(func=_edit)
    for q in (ls, show, *verbs.choices.values()):
        if not any(a.dest == "port" for a in q._actions):
            add_connection_flags(q)


def row(ap: dict) -> dict:
    """The stable JSON shape of one approval for scripts."""
    return {"id": ap["approval_id"], "status": ap["status"], "action": ap["action"], "summary": ap["summary"],
            "incident_id": ap["incident_id"], "required": ap["required"], "decisions": ap["decisions"],
            "result": ap["result"], "citations": ap["citations"], "action_hash": ap.get("action_hash"),
            "proposer": ap.get("proposer"), "emergency": ap.get("emergency", False), "outcome": ap.get("outcome")}


def _list(args: argparse.Namespace) -> int:
    params = {"status": args.status} if args.status else {}
    items = [row(a) for a in api(connection_settings(args), "GET", "/api/approvals", params=params)]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no approvals")
    for a in items:
        print(f"{a['id']}  {a['status']:<9}  {a['summary']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(api(connection_settings(args), "GET", f"/api/approvals/{args.id}"), indent=2))
    return 0


def _print(ap: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row(ap), indent=2))
        return
    detail = (ap.get("result") or {}).get("detail", "")
    print(f"{ap['approval_id']}  {ap['status']}  {ap['summary']}" + (f"  — {detail}" if detail else ""))


def _decide(args: argparse.Namespace) -> int:
    body = {"decision": args.decision, "reason": args.reason, "channel": "cli"}
    _print(api(connection_settings(args), "POST", f"/api/approvals/{args.id}/decision", json=body), args.json)
    return 0


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["supply_c=14", "unit=cu02"]`` → ``{"supply_c": 14, "unit": "cu02"}`` (values as JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected KEY=VALUE", code=2)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _edit(args: argparse.Namespace) -> int:
    body = {"params": parse_assignments(args.params), "reason": args.reason, "channel": "cli"}
    _print(api(connection_settings(args), "POST", f"/api/approvals/{args.id}/edit", json=body), args.json)
    return 0
