"""``opsloop knowledge lint``: what in a directory of runbooks the agent could not follow safely.

Each finding names the file and what is wrong: a file that does not load, an action of a kind the catalogue does
not have, a template citing a step the document lacks, or an action that sets a number its step does not bound
(no ``limits`` entry, see :mod:`knowledge.limits`): the planner cannot derive that number, and no proposal
citing the step can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from knowledge.documents import SUPPORTED_SUFFIXES, DocumentError, load_document
from policies.actions import ACTION_KINDS


@dataclass(frozen=True)
class Finding:
    path: Path
    where: str  # ``doc_id#step`` or ``-``
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.problem}"


def runbook_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The documents under ``paths`` (files as given, directories recursively), in a stable order."""
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            yield p


def lint(paths: Iterable[Path]) -> tuple[int, list[Finding]]:
    """``(documents read, findings)`` for every document under ``paths``."""
    findings: list[Finding] = []
    count = 0
    for path in runbook_files(paths):
        count += 1
        try:
            doc = load_document(path)
        except DocumentError as exc:
            findings.append(Finding(path, "-", f"does not load: {exc}"))
            continue
        steps = {s.step_id for s in doc.steps}
        for t in doc.actions:
            where = f"{doc.doc_id}#{t.step or '-'}"
            if t.kind not in ACTION_KINDS:
                findings.append(Finding(path, where, f"{t.kind} is not an action of the catalogue"))
                continue
            if t.step is not None and t.step not in steps:
                findings.append(Finding(path, where, f"{t.kind} cites step {t.step}, which the document lacks"))
            for param in t.unlimited():
                in_params = " (a fixed value in params is not checked against the step either)" if param in t.params \
                    else ""
                findings.append(Finding(path, where, f"{t.kind} sets {param} with no limit from its step{in_params}"))
    return count, findings
