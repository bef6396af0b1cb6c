"""``opsloop config show``: every setting with its value, where it came from, and what it does."""

from __future__ import annotations

import argparse
import json

from cluster.settings import describe_settings, load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the settings")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="every setting: value, source, environment variable, description")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    rows = describe_settings(load_settings())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']} = {r['value']!r}   [{r['source']}; {r['env']}]")
        print(f"    {r['description']}")
    return 0
