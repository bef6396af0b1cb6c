"""``opsloop incident replay``: run the twin and the agent over a trace (no gateway, nothing executes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cluster.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incident", help="evaluate the agent on a recorded trace")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    r = verbs.add_parser(
        "replay", help="twin + agent over a trace; one JSON object per incident",
        description="Replay a JSON Lines trace through the twin and the agent (no gateway side effects) and "
        "print each incident with its root cause, events and verified proposals.",
    )
    r.add_argument("trace", type=Path, help="JSON Lines trace (see `opsloop twin simulate`)")
    r.add_argument("--llm", default="none",
                   help="none (runbook mapping only, the default) or an OpenAI-compatible base URL (http://host:port/v1)")
    r.add_argument("--model", help="with --llm URL: the model id to ask (default: the server's first)")
    r.add_argument("--api-key", help="with --llm URL: bearer token (for opsloop's own /v1: a token of `opsloop users`)")
    r.add_argument("--json", action="store_true", help="one JSON object per incident (default: readable lines)")
    r.add_argument("--sensor-tau", type=float, default=15.0, help="sensor time constant τ in seconds (default 15)")
    r.add_argument("--knowledge", type=Path, action="append", default=[], help="extra runbook directory (repeatable)")
    r.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from cluster.agent_llm import completer_for

    if not args.trace.is_file():
        raise CliError(f"no such trace: {args.trace}", code=2)
    try:
        llm = completer_for(args.llm, model=args.model, api_key=args.api_key)
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    incidents = asyncio.run(replay(args.trace, llm, args.sensor_tau, args.knowledge))
    for inc in incidents:
        if args.json:
            print(json.dumps(inc, sort_keys=True))
        else:
            rc = inc["root_cause"]
            print(f"{inc['incident_id']}  root cause {rc['kind']} {rc['subject']}  ({len(inc['events'])} events)")
            for p in inc["proposals"]:
                cites = ", ".join(f"{c['doc_id']}#{c['step_id']}" for c in p["citations"])
                print(f"    {p['source']:<8} {p['summary']}  [{cites}]")
    return 0


async def replay(trace: Path, llm: Any, sensor_tau_s: float, knowledge_dirs: list[Path]) -> list[dict]:
    """Incidents (with their proposals) the agent would raise over ``trace``, in the order they opened."""
    from actors.agent.incidents import IncidentBook
    from actors.agent.propose import propose
    from actors.twin.model import TwinModel
    from cluster.telemetry.quality import Validator
    from cluster.telemetry.replay import read_batches
    from knowledge.retrieval import KnowledgeBase
    from policies.actions import describe

    kb = KnowledgeBase.bundled(extra_dirs=tuple(knowledge_dirs), dense=False)
    twin = TwinModel(sensor_tau_s=sensor_tau_s)
    book = IncidentBook()
    seen: dict[str, dict] = {}
    validator = Validator()
    bad = 0
    for samples, quarantined in read_batches(trace, validator):
        bad += len(quarantined)
        for ev in twin.ingest(samples):
            inc, needs = book.observe(ev)
            if inc is None:
                continue
            out = seen.setdefault(inc.incident_id, {"incident_id": inc.incident_id, "opened_ts": inc.opened_ts,
                                                   "proposals": []})
            out["root_cause"] = {"kind": inc.root_cause.kind, "subject": inc.root_cause.subject,
                                 "why": inc.root_cause.why}
            out["events"] = list(inc.event_ids)
            if needs:
                p = await propose(inc, kb, twin.topology(), llm)
                out.setdefault("proposed_ts", ev.ts)
                out["proposals"] += [
                    {"proposal_id": p.proposal_id, "action": a.action.model_dump(mode="json"),
                     "summary": describe(a.action), "citations": [c.model_dump() for c in a.citations],
                     "verified": p.verified, "source": p.source, "emergency": p.emergency,
                     "what_if": a.prediction.model_dump() if a.prediction else None}
                    for a in p.actions
                ]
    if bad:
        print(f"{trace}: {bad} line(s) quarantined (see `opsloop twin replay` for each reason)", file=sys.stderr)
    return sorted(seen.values(), key=lambda i: (i["opened_ts"], i["incident_id"]))
