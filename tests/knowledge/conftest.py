"""Shared fixture: a BM25-only knowledge base over the bundled corpus."""

from __future__ import annotations

import pytest

from knowledge.retrieval import KnowledgeBase


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    """The bundled corpus, BM25 only, in memory (fast, no torch)."""
    return KnowledgeBase.bundled(dense=False)

