"""Proposal verification rules: what must hold before any proposed action reaches a human."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from policies.actions import TARGET_FIELDS, Action

#: Which topology collection each target field is checked against.
_TARGET_KIND = {"gpu": "gpu", "unit": "unit", "node": "node", "job": "job", "link": "link"}


def check_action(action: Action, topology: Mapping[str, Collection[str]]) -> list[str]:
    """Problems with one (already schema-valid) action against the fleet: empty when it is fine.

    ``topology`` maps ``gpu``/``node``/``unit``/``job``/``link`` to the names the twin knows.
    """
    problems = []
    for field in TARGET_FIELDS[action.kind]:
        name = str(getattr(action, field))
        known = topology.get(_TARGET_KIND[field])
        if known is not None and name not in known:
            problems.append(f"{action.kind}: {field} {name!r} is not in the fleet")
    return problems


def check_resume(action: Action, drain: Mapping[str, Any] | None) -> list[str]:
    """Problems with a ``resume_node`` (empty when it is fine, and for every other kind): it must undo an executed
    ``drain_node`` of the same node. ``drain`` is approval ``drained_by`` as stored (``status``, ``action``; None:
    there is no such approval)."""
    if action.kind != "resume_node":
        return []
    a: Any = action
    done = (drain or {}).get("action") or {}
    if drain is None:
        return [f"resume_node: there is no approval {a.drained_by} whose drain it undoes"]
    if done.get("kind") != "drain_node" or done.get("node") != a.node or drain.get("status") != "executed":
        return [f"resume_node: approval {a.drained_by} is not an executed drain of {a.node} (it is "
                f"{drain.get('status')} {done.get('kind')} of {done.get('node') or '-'}); only that drain is undone"]
    return []


def check_citations(
    cited: Collection[tuple[str, str | None]], retrieved: Collection[tuple[str, str | None]]
) -> list[str]:
    """Every cited (doc_id, step_id) must be among the passages actually retrieved for this incident."""
    allowed = set(retrieved)
    allowed_docs = {d for d, _ in retrieved}
    return [
        f"citation {d}#{s or '-'} was not among the retrieved passages"
        for d, s in cited
        if (d, s) not in allowed and not (s is None and d in allowed_docs)
    ]


def check_proposal(
    actions: Sequence[Action], verified: bool, topology: Mapping[str, Collection[str]] | None,
    agent_problems: Sequence[str] = (),
) -> list[str]:
    """What the gateway re-checks of a proposal before it opens any approval: empty when it may go on.

    The gateway does not take the proposer's word: the proposal must say it was verified (else the proposer's
    own ``agent_problems`` are quoted), it must propose something, and every action is checked against the fleet
    again with :func:`check_action` (``topology`` None: the fleet is unknown here and only the rest is checked).
    """
    problems = []
    if not verified:
        why = "; ".join(agent_problems[:5]) or "no reason given"
        problems.append(f"the proposer did not verify it ({why})")
    if not actions:
        problems.append("it proposes no action")
    for action in actions:
        problems += check_action(action, topology) if topology is not None else []
    return problems
