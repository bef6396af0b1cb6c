"""``opsloop approvals list|show|approve|reject|edit|undo``: decide from the terminal, through the HTTP API.

Decisions are made as the token's user (the admin token of `opsloop up` on this machine unless
``OPSLOOP_ADMIN_TOKEN`` names another) and recorded with channel ``http`` (the route they come through; the
server never takes a client's word for its channel). A decision is bound to the action it was shown: ``approve``
and ``reject`` fetch the approval, print its action and hash, and send that hash, so an action edited meanwhile
is refused (409) instead of decided unseen; ``--hash`` binds it to what an earlier ``show`` printed. ``undo``
proposes an executed action's inverse as a new approval (judged by the policy; the token's user cannot approve it).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cluster.cli import CliError
from cluster.cli._http import add_connection_flags, api, connection_settings
from serving.slack_blocks import describe_effect, describe_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approvals", help="list, approve, reject or edit pending actions",
                       description="List approvals and decide them, through the API of a running `opsloop up`.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="list approvals (newest first)")
    ls.add_argument("--status", help="only this state (pending, executed, rejected, …)")
    ls.add_argument("--json", action="store_true", help="print a JSON array (id, status, action, …)")
    ls.set_defaults(func=_list)
    show = verbs.add_parser("show", help="show one approval: its action, the action's hash and what it will run")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print the whole approval as JSON")
    show.set_defaults(func=_show)
    for verb in ("approve", "reject"):
        v = verbs.add_parser(verb, help=f"{verb} one approval (as the token's user), bound to the action shown",
                             description=f"Fetch the approval, print the action it would {verb} and its hash, and "
                             "send that hash with the decision: if the action changes in between, the server "
                             "refuses (409) and nothing is decided.")
        v.add_argument("id", help="approval id (ap-…)")
        v.add_argument("--reason", required=verb == "reject", default="", help="why (required to reject)")
        v.add_argument("--hash", dest="expect_hash", metavar="HASH",
                       help="decide only if the action's hash still starts with HASH (as `approvals show` printed "
                       "it; at least 8 characters)")
        v.add_argument("--json", action="store_true", help="print the approval as JSON")
        v.set_defaults(func=_decide, decision=verb)
    ed = verbs.add_parser("edit", help="change a pending action's parameters (judged again; approvals reset)")
    ed.add_argument("id", help="approval id (ap-…)")
    ed.add_argument("--set", dest="params", action="append", required=True, metavar="KEY=VALUE",
                    help="a parameter to change, e.g. --set supply_c=14 (repeatable; values parse as JSON)")
    ed.add_argument("--reason", required=True, help="why the change")
    ed.add_argument("--json", action="store_true", help="print the approval as JSON")
    ed.set_defaults(func=_edit)
    un = verbs.add_parser("undo", help="propose the inverse of an executed action as a new approval",
                          description="The inverse recorded as the action ran (the previous power limit or setpoint, "
                          "the resume of a drain) opens as a new approval citing this one, judged by the same "
                          "policy; you are its proposer, so another approver decides it.")
    un.add_argument("id", help="approval id of the executed action (ap-…)")
    un.add_argument("--reason", default="", help="why undo it")
    un.add_argument("--json", action="store_true", help="print the new approval as JSON")
    un.set_defaults(func=_undo)
    for q in (ls, show, *verbs.choices.values()):
        if not any(a.dest == "port" for a in q._actions):
            add_connection_flags(q)


def row(ap: dict) -> dict:
    """The stable JSON shape of one approval for scripts."""
    return {"id": ap["approval_id"], "status": ap["status"], "action": ap["action"], "summary": ap["summary"],
            "incident_id": ap["incident_id"], "required": ap["required"], "decisions": ap["decisions"],
            "result": ap["result"], "citations": ap["citations"],
            "bounds": ap.get("bounds", {}), "action_hash": ap.get("action_hash"),
            "proposer": ap.get("proposer"), "source": ap.get("source", "fallback"),
            "emergency": ap.get("emergency", False), "outcome": ap.get("outcome"), "effect": ap.get("effect"),
            "inverse": ap.get("inverse"), "undo_of": ap.get("undo_of"), "undone_by": ap.get("undone_by")}


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


def describe(ap: dict) -> list[str]:
    """The lines that show an approval: what would run (the action, its hash and its exact effect) and where it
    stands."""
    params = {k: v for k, v in ap["action"].items() if k != "kind"}
    lines = [f"{ap['approval_id']}  {ap['status']}  {ap['summary']}",
             f"  action       {ap['action']['kind']} {json.dumps(params, sort_keys=True)}",
             f"  action_hash  {ap['action_hash']}",
             f"  will run     {describe_effect(ap)}",
             *(f"  bound        {k}: {b.get('text', '')}" for k, b in (ap.get("bounds") or {}).items()),
             f"  proposed by  {describe_source(ap)}",
             f"  policy       {ap.get('policy', '')} ({ap.get('required', 0)} approver(s))",
             f"  incident     {ap['incident_id']}"]
    for d in ap.get("decisions", []):
        lines.append(f"  decided      {d['decision']} by {d['by']} via {d['channel']}"
                     + (f": {d['reason']}" if d.get("reason") else ""))
    if ap.get("undo_of"):
        lines.append(f"  undoes       {ap['undo_of']}")
    if inv := ap.get("inverse"):
        params = {k: v for k, v in inv.items() if k != "kind"}
        lines.append(f"  undo         {inv['kind']} {json.dumps(params, sort_keys=True)}"
                     + (f" (proposed as {ap['undone_by']})" if ap.get("undone_by") else
                        f" (opsloop approvals undo {ap['approval_id']})"))
    return lines


def _show(args: argparse.Namespace) -> int:
    ap = api(connection_settings(args), "GET", f"/api/approvals/{args.id}")
    print(json.dumps(ap, indent=2) if args.json else "\n".join(describe(ap)))
    return 0


def _print(ap: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row(ap), indent=2))
        return
    detail = (ap.get("result") or {}).get("detail", "")
    print(f"{ap['approval_id']}  {ap['status']}  {ap['summary']}" + (f"  — {detail}" if detail else ""))


def _decide(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    ap = api(settings, "GET", f"/api/approvals/{args.id}")
    shown = ap["action_hash"]
    if args.expect_hash is not None:
        expect = args.expect_hash.strip().lower()
        if len(expect) < 8:
            raise CliError("--hash: give at least 8 characters of the action_hash `approvals show` printed", code=2)
        if not shown.startswith(expect):
            raise CliError(f"not {args.decision}d: the action changed since you saw it; reload "
                           f"(`opsloop approvals show {args.id}`)", code=2)
    verb = "approving" if args.decision == "approve" else "rejecting"
    # What this decision is bound to, before it is sent (on stderr with --json, so stdout stays JSON).
    print(f"{verb} {ap['approval_id']}: {ap['summary']}\n  action_hash {shown}\n  will run    {describe_effect(ap)}",
          file=sys.stderr if args.json else sys.stdout, flush=True)
    body = {"decision": args.decision, "reason": args.reason, "action_hash": shown}
    _print(api(settings, "POST", f"/api/approvals/{args.id}/decision", json=body), args.json)
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
    body = {"params": parse_assignments(args.params), "reason": args.reason}
    _print(api(connection_settings(args), "POST", f"/api/approvals/{args.id}/edit", json=body), args.json)
    return 0


def _undo(args: argparse.Namespace) -> int:
    ap = api(connection_settings(args), "POST", f"/api/approvals/{args.id}/undo", json={"reason": args.reason})
    print(json.dumps(row(ap), indent=2) if args.json else "\n".join(describe(ap)))
    return 0
