"""``opsloop audit verify | show --incident ID``: the hash-chained audit trail of a running ``opsloop up``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cluster.cli import CliError
from cluster.cli._http import add_connection_flags, api, connection_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify the audit trail's hash chain; show an incident's entries",
                       description="Every proposal, decision, edit, expiry, execution and outcome is an entry of an "
                       "append-only, hash-chained Redis stream.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="check the chain; exit 1 and name the first bad entry if it was tampered with")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_verify)
    s = verbs.add_parser("show", help="entries of one incident (or approval), oldest first")
    s.add_argument("--incident", help="incident id (inc-…)")
    s.add_argument("--approval", help="approval id (ap-…)")
    s.add_argument("--json", action="store_true", help="print a JSON array")
    s.set_defaults(func=_show)
    for q in (v, s):
        add_connection_flags(q)


def _verify(args: argparse.Namespace) -> int:
    report = api(connection_settings(args), "GET", "/api/audit/verify")
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"audit trail intact: {report['entries']} entries, head seq {report['head_seq']}")
    if not report["ok"]:
        pr = report["problem"]
        where = f"seq {pr['seq']}" + (f", stream id {pr['stream_id']}" if pr.get("stream_id") else "")
        raise CliError(f"audit trail broken at {where}: {pr['message']}", code=1)
    return 0


def _show(args: argparse.Namespace) -> int:
    if not args.incident and not args.approval:
        raise CliError("give --incident ID or --approval ID", code=2)
    params = {k: v for k, v in (("incident", args.incident), ("approval", args.approval)) if v}
    entries = api(connection_settings(args), "GET", "/api/audit", params=params)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no entries")
    for e in entries:
        when = datetime.fromtimestamp(e["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        pl = e.get("payload", {})
        what = pl.get("decision") or pl.get("verdict") or pl.get("status", "")
        extra = pl.get("reason") or (pl.get("result") or {}).get("detail") or pl.get("expected") or ""
        client = f" ({pl['client']})" if pl.get("client") else ""  # what the client said it is: information only
        print(f"#{e['seq']:<5} {when}Z {e['type']:<9} {e.get('approval_id') or '-':<15} {what:<9} "
              f"by {e['actor']} via {e['channel']}{client}" + (f" — {extra}" if extra else ""))
    return 0
