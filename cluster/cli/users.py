"""``opsloop users add NAME --role R | list``: API tokens for people and tools (admin only)."""

from __future__ import annotations

import argparse
import json

from cluster.cli._http import add_connection_flags, api, connection_settings

ROLES = ("viewer", "operator", "approver", "admin")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="add users (prints their API token once) and list them",
                       description="Users and their API tokens, through the API of a running `opsloop up` "
                       "(needs an admin token: the one `opsloop up` keeps in the data directory).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="create a user (or give it a new token) and print the token once")
    add.add_argument("name", help="user name (letters, digits, _ . @ -)")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="viewer reads; operator also edits; approver also decides; admin also manages users")
    add.add_argument("--json", action="store_true", help="print {name, role, token} as JSON")
    add.set_defaults(func=_add)
    ls = verbs.add_parser("list", help="list users and roles")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=_list)
    for q in (add, ls):
        add_connection_flags(q)


def _add(args: argparse.Namespace) -> int:
    out = api(connection_settings(args), "POST", "/api/users",
              json={"name": args.name, "role": args.role})
    if args.json:
        print(json.dumps({"name": out["name"], "role": out["role"], "token": out["token"]}))
        return 0
    print(f"user {out['name']} ({out['role']}); token, shown only now — keep it secret:")
    print(out["token"])
    print("use it as: Authorization: Bearer <token>   (or OPSLOOP_ADMIN_TOKEN=<token> for this CLI)")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = api(connection_settings(args), "GET", "/api/users")
    if args.json:
        print(json.dumps(users, indent=2))
        return 0
    for u in users:
        print(f"{u['name']:<20} {u['role']:<9} created by {u['created_by']}")
    return 0
