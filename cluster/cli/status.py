"""``opsloop status``: the fleet, approvals and events of a running ``opsloop up``."""

from __future__ import annotations

import argparse
import json

from cluster.cli._http import add_connection_flags, api, connection_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="fleet summary, pending approvals, event counts")
    p.add_argument("--json", action="store_true", help="print the full status as JSON")
    add_connection_flags(p)
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    st = api(connection_settings(args), "GET", "/api/status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    tw = st["twin"]
    print(f"fleet     {tw['gpus']} GPUs on {len(tw['nodes'])} nodes, t={tw['ts']:.0f} s, "
          f"hottest {tw['max_sensed_c']} °C")
    print(f"hot       {', '.join(tw['hot_gpus']) or 'none'}")
    print(f"events    {tw['events_total']} " + " ".join(f"{k}={v}" for k, v in tw["events_by_kind"].items()))
    b = tw.get("barrier") or {}
    if b.get("ticks"):
        print(f"barrier   {b['shards']} shards, {b['ticks']} ticks, wait mean {b['mean_wait_ms']} ms / p99 "
              f"{b['p99_wait_ms']} ms, efficiency {b['efficiency']}, slowest {b['slowest_shard']} "
              f"({b['slowest_count']} ticks)")
    print("approvals " + (" ".join(f"{k}={v}" for k, v in st["approvals"].items()) or "none"))
    for inc in st["agent"]["open_incidents"]:
        print(f"incident  {inc['incident_id']}  root cause {inc['root_cause']['kind']} {inc['root_cause']['subject']}")
    return 0
