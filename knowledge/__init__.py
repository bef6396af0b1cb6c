"""Knowledge: manuals, SOP/MOP/EOP runbooks and accumulated experience, with hybrid retrieval and citations."""

from __future__ import annotations

from knowledge.documents import ActionTemplate, Document, DocumentError, Step, load_document
from knowledge.retrieval import Citation, KnowledgeBase, Passage

__all__ = [
    "ActionTemplate",
    "Citation",
    "Document",
    "DocumentError",
    "KnowledgeBase",
    "Passage",
    "Step",
    "load_document",
]
