"""Agent evaluation over tests/scenarios: action precision/recall, citation validity, time to proposal.

(The recorded scenarios the tests assert; ``bench/agent_eval.py`` evaluates held-out generated variants.)
Usage: .venv/bin/python bench/agent_eval_recorded.py [--llm none] [--llm http://127.0.0.1:8000/v1 …] [--write]
Each --llm mode replays every scenario through the twin and the agent (`opsloop incident replay`). Time to
proposal is in trace seconds (first event → proposal: detection and grouping latency) and in wall-clock
milliseconds the agent spent proposing. `--write` puts the table into docs/benchmarks.md (## Agent).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path

import numpy as np
import yaml

from cluster.agent_llm import completer_for
from cluster.cli.incident import replay
from knowledge.retrieval import KnowledgeBase

ROOT = Path(__file__).resolve().parents[1]


def evaluate(mode: str, model: str | None = None, api_key: str | None = None) -> dict:
    llm = completer_for(mode, model=model, api_key=api_key)
    kb = KnowledgeBase.bundled(dense=False)
    tp = fp = fn = 0
    cites_ok = cites = 0
    to_proposal_s: list[float] = []
    wall_ms: list[float] = []
    right_cause = 0
    sources: dict[str, int] = {}
    unverified = 0
    scenarios = sorted(p for p in (ROOT / "tests" / "scenarios").iterdir() if (p / "trace.jsonl").exists())
    for folder in scenarios:
        exp = yaml.safe_load((folder / "expected.yaml").read_text())
        t0 = time.perf_counter()
        incidents = asyncio.run(replay(folder / "trace.jsonl", llm, 15.0, []))
        wall = (time.perf_counter() - t0) * 1000
        acting = [i for i in incidents if i["proposals"]]
        got = sorted(p["action"]["kind"] for i in acting for p in i["proposals"])
        for i in acting:
            for p in i["proposals"]:
                sources[p["source"]] = sources.get(p["source"], 0) + 1
                unverified += not p["verified"]
        want = sorted(exp["action_kinds"])
        for k in set(got) | set(want):
            tp += min(got.count(k), want.count(k))
            fp += max(0, got.count(k) - want.count(k))
            fn += max(0, want.count(k) - got.count(k))
        if exp["root_cause"] is None:
            right_cause += not acting
        elif acting and all(acting[0]["root_cause"][k] == v for k, v in exp["root_cause"].items()):
            right_cause += 1
        for i in acting:
            first_event_ts = i["opened_ts"]
            for p in i["proposals"]:
                for c in p["citations"]:
                    cites += 1
                    doc = kb.document(c["doc_id"])
                    cites_ok += bool(doc and any(s.step_id == c["step_id"] for s in doc.steps))
            ts = _proposal_ts(i)
            if ts is not None:
                to_proposal_s.append(ts - first_event_ts)
        if acting:
            wall_ms.append(wall / max(1, sum(len({p["proposal_id"] for p in i["proposals"]}) for i in acting)))
    return {
        "mode": mode if mode == "none" else f"{mode} ({model or 'first model'})",
        "scenarios": len(scenarios), "root_cause_right": right_cause, "sources": sources, "unverified": unverified,
        "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
        "citation_validity": cites_ok / max(1, cites),
        "to_proposal_s_p50": _pct(to_proposal_s, 50), "to_proposal_s_p99": _pct(to_proposal_s, 99),
        "replay_ms_per_proposal_p50": _pct(wall_ms, 50), "replay_ms_per_proposal_p99": _pct(wall_ms, 99),
    }


def _proposal_ts(incident: dict) -> float | None:
    """The trace time of the incident's proposal: the timestamp of the event that triggered it."""
    return incident.get("proposed_ts", incident["opened_ts"])


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


def table(rows: list[dict]) -> str:
    head = ("| --llm | root cause right | action precision | action recall | citation validity | actions by source "
            "| unverified | first event → proposal p50 / p99 (trace s) | replay per proposal p50 / p99 (ms) |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['mode']} | {r['root_cause_right']}/{r['scenarios']} | {r['precision']:.2f} | {r['recall']:.2f} | "
        f"{r['citation_validity']:.2f} | {', '.join(f'{k} {v}' for k, v in sorted(r['sources'].items()))} | "
        f"{r['unverified']} | "
        f"{r['to_proposal_s_p50']} / {r['to_proposal_s_p99']} | "
        f"{r['replay_ms_per_proposal_p50']} / {r['replay_ms_per_proposal_p99']} |\n"
        for r in rows
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", action="append", default=None, help="none or an OpenAI-compatible base URL; repeatable")
    ap.add_argument("--model", help="with an URL: the model id (e.g. smollm2-135m-instruct on opsloop's /v1)")
    ap.add_argument("--api-key", help="with an URL: bearer token (opsloop's /v1 needs a viewer token)")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    rows = [evaluate(m, args.model, args.api_key) for m in (args.llm or ["none"])]
    out = table(rows)
    print(out)
    if args.write:
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text() if doc.exists() else "# Benchmarks\n"
        section = ("## Agent\n`bench/agent_eval_recorded.py` over the recorded scenarios in `tests/scenarios/` "
                   "(twin + agent, no gateway).\n\n" + out)
        text = re.sub(r"## Agent\n.*?(?=\n## |\Z)", section, text, flags=re.S) if "## Agent" in text else (
            text.rstrip() + "\n\n" + section)
        doc.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
