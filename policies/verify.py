"""Proposal verification rules: what must hold before any proposed action reaches a human."""

from __future__ import annotations

from collections.abc import Collection, Mapping

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
