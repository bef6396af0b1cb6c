"""Hybrid retrieval with the real all-MiniLM-L6-v2 model (skipped when it is not installed, a failure under CI)."""

from __future__ import annotations

from pathlib import Path

from kb_helpers import write_runbook

from knowledge.retrieval import KnowledgeBase
from tests.requirements_check import require

require("minilm")  # the whole module: skipped without the model, a failure under CI=true


def test_hybrid_finds_paraphrase_and_reuses_vectors(tmp_path: Path) -> None:
    d = tmp_path / "docs"
    d.mkdir()
    write_runbook(d, "a.md", "mop-chiller", "MOP: Restart a tripped chiller", "Chiller compressor restart.")
    write_runbook(d, "b.md", "mop-ups", "MOP: UPS battery test", "Monthly battery discharge test.")
    write_runbook(d, "c.md", "mop-door", "MOP: Badge reader repair", "Fix the door access badge reader.")
    kb = KnowledgeBase.open(tmp_path / "store", dense=True)
    kb.index([d])
    assert kb.dense and kb.stats()["vectors"] == kb.stats()["chunks"]
    hit = kb.search("the machine that makes cold water stopped", top_k=1, mode="dense")[0]
    assert hit.citation.doc_id == "mop-chiller"
    assert kb.search("battery discharge", top_k=1)[0].citation.doc_id == "mop-ups"
    reopened = KnowledgeBase.open(tmp_path / "store", dense=True)
    assert reopened.state.missing_vectors() == []  # vectors persisted, not recomputed
