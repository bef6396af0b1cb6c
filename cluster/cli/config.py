"""``opsloop config show``: every setting with its value, where it came from, and what it does. Secrets
(tokens, keys, the Slack signing secret) show as ``**********``, and passwords or tokens inside URLs are masked."""

from __future__ import annotations

import argparse
import json

from cluster.cli import CliError
from cluster.settings import SettingsError, describe_settings, load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the settings")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser(
        "show", help="every setting: value (secrets masked), source, environment variable, description"
    )
    show.add_argument("--json", action="store_true", help="one JSON list of rows (secrets masked there too)")
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    try:
        rows = describe_settings(load_settings())
    except SettingsError as exc:
        raise CliError(str(exc), code=2) from None
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']} = {r['value']!r}   [{r['source']}; {r['env']}]")
        print(f"    {r['description']}")
    return 0
