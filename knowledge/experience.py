"""A decided incident becomes an ``experience`` document that the next similar incident retrieves."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from knowledge.documents import ActionTemplate, Document, build_document

#: Action parameters that name a target or a value taken from the incident, and their placeholder. A number an
#: action set is repeated only within the limits of the step it followed (an action's ``limits``), else as it was.
_PLACEHOLDERS = {
    "gpu": "{gpu}",
    "node": "{node}",
    "unit": "{unit}",
    "link": "{link}",
    "job": "{job}",
    "summary": "{summary}",
    "severity": "{severity}",
}
_APPROVED = ("approved", "accepted", "edited", "auto", "auto_approved", "executed")


def _event_line(e: Mapping[str, object] | str) -> tuple[str, str]:
    if isinstance(e, str):
        return e, e
    kind = str(e.get("kind", "event"))
    subject = str(e.get("subject", ""))
    data = e.get("data")
    facts = ", ".join(f"{k}={v}" for k, v in data.items()) if isinstance(data, Mapping) else ""
    return kind, " ".join(p for p in (kind, "on " + subject if subject else "", f"({facts})" if facts else "") if p)


def _actions(proposal: Mapping[str, object] | str) -> list[Mapping[str, object]]:
    if isinstance(proposal, str):
        return []
    acts = proposal.get("actions") or ([proposal["action"]] if "action" in proposal else [])
    return [a for a in acts if isinstance(a, Mapping)] if isinstance(acts, Sequence) else []


class Experience(BaseModel):
    """A decided incident, as the knowledge base records it (one record, passed whole).

    Attributes:
        incident_id: the incident's id; the document id is ``exp-<incident_id>``.
        events: the incident's events (kind strings or mappings with ``kind``, ``subject``, ``data``).
        proposal: the proposal (mapping with ``actions`` and ``rationale``, or its summary).
        decision: approved, rejected, edited …
        reason: the operator's reason.
        outcome: what was observed after the decision.
        equipment: equipment involved (``cdu``, ``gpu`` …).
        title: a headline; derived from the events when omitted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str = Field(min_length=1)
    events: tuple[dict[str, Any] | str, ...]
    proposal: dict[str, Any] | str
    decision: str = Field(min_length=1)
    reason: str = ""
    outcome: str = ""
    equipment: tuple[str, ...] = ()
    title: str | None = None


def experience_document(exp: Experience) -> tuple[Document, str]:
    """Build the experience document and its Markdown text (front matter + sections).

    Returns:
        (document, markdown) — the Markdown is what a store keeps on disk.
    """
    proposal, decision, reason, outcome = exp.proposal, exp.decision, exp.reason, exp.outcome
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", exp.incident_id).strip("-") or "incident"
    doc_id = f"exp-{slug}"[:128]
    lines = [_event_line(e) for e in exp.events]
    kinds = list(dict.fromkeys(k for k, _ in lines))
    acts = _actions(proposal)
    described = [
        f"{a.get('kind')}(" + ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("kind", "limits")) + ")"
        for a in acts
    ]
    if isinstance(proposal, str):
        rationale = proposal
    else:
        rationale = str(proposal.get("rationale") or proposal.get("summary") or "")
    templates: list[ActionTemplate] = []
    if decision.lower() in _APPROVED:
        for a in acts:
            limits = a.get("limits") if isinstance(a.get("limits"), Mapping) else {}
            values = {k: v for k, v in a.items() if k not in ("kind", *limits) and isinstance(v, str | int | float)}
            params = {k: _PLACEHOLDERS.get(k, v) for k, v in values.items()}
            templates.append(ActionTemplate(kind=str(a.get("kind")), params=params, limits=limits))
    head = exp.title or f"Experience: {', '.join(k.replace('_', ' ') for k in kinds) or 'incident'} ({decision})"
    body = "\n".join(
        [
            f"# {head}",
            "",
            "## Events",
            *[f"- {text}" for _, text in lines],
            "",
            "## Proposal",
            *([f"- {d}" for d in described] or ["- (no actions)"]),
            *([f"\n{rationale}"] if rationale else []),
            "",
            "## Decision",
            f"{decision}" + (f": {reason}" if reason else ""),
            "",
            "## Outcome",
            outcome or "not recorded",
            "",
        ]
    )
    meta: dict[str, object] = {
        "id": doc_id,
        "title": head,
        "type": "experience",
        "equipment": list(exp.equipment),
        "events": kinds,
        "actions": [t.model_dump(exclude_none=True, exclude_defaults=True, by_alias=True) for t in templates],
        "risk": "low",
    }
    doc = build_document(meta, body, Path(f"{doc_id}.md"), source=f"experience:{doc_id}")
    markdown = "---\n" + yaml.safe_dump(json.loads(json.dumps(meta)), sort_keys=False) + "---\n" + body
    return doc, markdown
