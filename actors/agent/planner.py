"""The deterministic planner: incident facts + the runbook's front matter → a verified proposal.

This is the path every proposal can fall back to (``source: "fallback"``), and with ``--llm none`` the
only one. Each action comes from an action template of a retrieved runbook, with ``{placeholders}``
filled from the incident's facts, then checked against the catalogue, the fleet and the citations.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from actors.agent.bounds import check_bounds, step_bounds
from actors.agent.incidents import Incident
from actors.agent.proposals import Cited, Proposal, ProposedAction, action_id, proposal_id
from actors.agent.whatif import predict
from actors.twin.profiles import profile
from knowledge.documents import ActionTemplate, Document
from knowledge.experience import Experience
from knowledge.limits import Bound
from knowledge.retrieval import Passage
from policies.actions import RISK, Notify, Risk, describe, parse_action
from policies.verify import check_action, check_citations

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class Knowledge(Protocol):
    """What the planner needs of the knowledge base."""

    def for_event(self, kind: str, subject: str, data: Mapping[str, object], top_k: int = 5) -> list[Passage]: ...

    def document(self, doc_id: str) -> Document | None: ...

    def add_experience(self, experience: Experience) -> Document: ...


def incident_facts(inc: Incident) -> dict[str, Any]:
    """Values the action templates may use, derived from what the twin reported. Numbers an action sets are not
    here: they come from the cited step's limits (:mod:`actors.agent.bounds`)."""
    f = dict(inc.facts)
    hot = len(inc.hot)
    f["severity"] = "high" if inc.kinds.get("gpu_overheat") or inc.kinds.get("thermal_slowdown") else "medium"
    f["summary"] = f"{inc.root_cause.kind} on {inc.root_cause.subject}: {hot} affected ({inc.incident_id})"
    return {k: v for k, v in f.items() if v is not None}


def projects_shutdown(facts: Mapping[str, Any]) -> bool:
    """Whether the twin projects a GPU of the incident to its shutdown temperature (92 °C on H100)."""
    peak = facts.get("peak_projected_c")
    shutdown = facts.get("shutdown_c", profile(str(facts.get("model", ""))).shutdown_c)
    return isinstance(peak, int | float) and peak >= float(shutdown)


def bind(template: ActionTemplate, facts: Mapping[str, Any]) -> dict[str, Any] | None:
    """Fill a template's placeholders; None when a fact it needs is missing."""
    out: dict[str, Any] = {"kind": template.kind}
    for key, value in template.params.items():
        if isinstance(value, str):
            names = _PLACEHOLDER.findall(value)
            if any(n not in facts for n in names):
                return None
            whole = _PLACEHOLDER.fullmatch(value)
            value = facts[whole.group(1)] if whole else _PLACEHOLDER.sub(lambda m: str(facts[m.group(1)]), value)
        out[key] = value
    return out


def retrieve(inc: Incident, kb: Knowledge) -> list[Passage]:
    """The passages for an incident's root cause: the one retrieval a proposal rests on."""
    return kb.for_event(inc.root_cause.kind, inc.root_cause.subject, inc.root_event.get("data", {}), top_k=5)


def plan(inc: Incident, kb: Knowledge, topology: Mapping[str, Collection[str]],
         passages: Sequence[Passage] | None = None) -> Proposal:
    """The fallback proposal for an incident revision: the first runbook (in retrieval order) whose primary
    action binds and verifies, plus its low-risk actions (ticket, notification).

    ``passages`` are :func:`retrieve`'s for this incident when the caller has them already (the model path
    shows the same passages to the model); without them the plan retrieves them itself."""
    if passages is None:
        passages = retrieve(inc, kb)
    facts = incident_facts(inc)
    pid = proposal_id(inc.incident_id, inc.revision)
    problems: list[str] = []  # templates skipped, for the record
    citation_problems: list[str] = []  # these make the proposal unverified
    chosen: list[tuple[Any, ActionTemplate, Document, dict[str, Bound]]] = []
    low_only: list[tuple[Any, ActionTemplate, Document, dict[str, Bound]]] = []
    retrieved = {(p.citation.doc_id, p.citation.step_id) for p in passages}
    seen_docs: list[str] = []
    for p in passages:
        if p.citation.doc_id in seen_docs or "suspected_injection" in p.flags:
            continue
        seen_docs.append(p.citation.doc_id)
        doc = kb.document(p.citation.doc_id)
        if doc is None or not doc.actions:
            continue
        primary, extras = None, []
        for t in doc.actions:
            params = bind(t, facts)
            if params is None:
                continue
            bounds, unfollowable = step_bounds(t, facts)
            if unfollowable:
                where = f"{doc.doc_id}#{t.step or '-'}"
                problems += [f"{where}: {t.kind} cannot follow the step: {w}" for w in unfollowable]
                continue
            params.update({param: b.pick() for param, b in bounds.items()})
            try:
                action = parse_action(params)
            except ValidationError as exc:
                problems.append(f"{doc.doc_id}: {t.kind} does not validate: {exc.errors()[0]['msg']}")
                continue
            issues = check_action(action, topology) + check_bounds(action, bounds, facts)
            if issues:
                problems += issues
                continue
            if RISK[action.kind] is Risk.low:
                extras.append((action, t, doc, bounds))
            elif primary is None:
                primary = (action, t, doc, bounds)
        if primary is not None:
            chosen = [primary, *extras]
            break
        if extras and not low_only:  # a runbook that only notifies: kept in case none prescribes more
            low_only = extras
    if not chosen and low_only:
        chosen = low_only
    for doc in {d.doc_id: d for _, _, d, _ in chosen}.values():
        # The runbook was retrieved as a whole once chosen: its steps are citable.
        retrieved |= {(doc.doc_id, s.step_id) for s in doc.steps} | {(doc.doc_id, None)}
    actions = []
    for i, (action, t, doc, bounds) in enumerate(chosen):
        cited = (Cited(doc_id=doc.doc_id, step_id=t.step, title=doc.title),)
        citation_problems += check_citations([(c.doc_id, c.step_id) for c in cited], retrieved)
        actions.append(ProposedAction(action_id=action_id(pid, i, action), action=action, citations=cited,
                                      rationale=f"{doc.title}, step {t.step or '-'}: {describe(action)}",
                                      prediction=predict(action, facts), bounds=bounds))
    if not actions:
        note = Notify(message=f"{facts['summary']}: no runbook action applies; please investigate.")
        actions = [
            ProposedAction(action_id=action_id(pid, 0, note), action=note, citations=(), rationale="no runbook matched")
        ]
    return Proposal(
        proposal_id=pid, incident_id=inc.incident_id, ts=inc.last_ts, root_cause=inc.root_cause,
        diagnosis=f"{inc.root_cause.why}. Affected: {', '.join(inc.hot) or 'none yet'}.",
        actions=tuple(actions), source="fallback", verified=not citation_problems,
        problems=tuple(citation_problems + problems), confidence=0.9 if chosen else 0.3, event_ids=tuple(inc.event_ids),
        emergency=projects_shutdown(facts),
    )

