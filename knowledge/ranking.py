"""The two retrievers and their fusion: BM25 (llama-index's bm25s retriever) and dense cosine similarity.

Both rank *chunks*; :func:`fuse_documents` turns their rankings into one ranking of documents by reciprocal
rank fusion, so that a document with many similar chunks does not crowd others out of the top k.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from knowledge.chunking import Chunk

#: RRF constant (Cormack et al. 2009): damps the weight of the very first ranks.
RRF_K = 60
_SPLIT = re.compile(r"[_/\\]+")
_XID = re.compile(r"\b(xid)[-_ =:]?(\d+)\b", re.I)


def normalize(text: str) -> str:
    """Lexical normalisation shared by documents and queries: event kinds and paths become words."""
    text = _XID.sub(r"\1 \2", text)
    return _SPLIT.sub(" ", text)


def _import_bm25s_without_numba() -> None:
    """Import ``bm25s`` with its numpy backend. When numba is installed (vLLM brings it), ``import bm25s`` imports
    numba and llvmlite and JIT-compiles its selection functions: +0.1 GiB in every process that searches and seconds
    of start-up, for a speed-up that a few thousand chunks never see."""
    import sys

    if "bm25s" in sys.modules:
        return
    saved = sys.modules.get("numba")
    sys.modules["numba"] = None  # type: ignore[assignment]  # ``import numba`` raises ImportError while this stands
    try:
        import bm25s  # noqa: F401
    finally:
        if saved is None:
            del sys.modules["numba"]
        else:
            sys.modules["numba"] = saved


class LexicalIndex:
    """BM25 over chunk text (title and section counted twice), English stemming and stop words."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        """Build the index.

        Args:
            chunks: the chunks, in the order the caller's masks and results refer to.
        """
        from llama_index.core.schema import TextNode

        _import_bm25s_without_numba()
        from llama_index.retrievers.bm25 import BM25Retriever

        self.size = len(chunks)
        if not chunks:
            self._retriever = None
            return
        nodes = [TextNode(id_=c.chunk_id, text=normalize(c.index_text())) for c in chunks]
        self._retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=min(10, len(nodes)), language="en")

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for a query (zeros when no query word is in the index)."""
        if self._retriever is None:
            return np.zeros(0, dtype=np.float32)
        import bm25s

        r = self._retriever
        tokens = bm25s.tokenize(
            normalize(query),
            stopwords="en",
            stemmer=r.stemmer,
            token_pattern=r.token_pattern,
            return_ids=False,
            show_progress=False,
        )[0]
        ids = r.bm25.get_tokens_ids(list(tokens))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(r.bm25.get_scores_from_ids(ids), dtype=np.float32)


class DenseIndex:
    """Cosine similarity between a query vector and unit-normalised chunk vectors."""

    def __init__(self, vectors: np.ndarray) -> None:
        """Keep a (chunks × dim) matrix; rows are normalised here."""
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else np.ones((0, 1))
        self.matrix = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def scores(self, query_vector: Sequence[float]) -> np.ndarray:
        """Cosine similarity of every chunk to the query."""
        q = np.asarray(query_vector, dtype=np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return self.matrix @ q


def rank(scores: np.ndarray, mask: np.ndarray | None, limit: int, positive_only: bool = True) -> list[int]:
    """Chunk indices by descending score, restricted to ``mask`` and (optionally) to scores above zero."""
    if scores.size == 0:
        return []
    s = scores.astype(np.float64, copy=True)
    if mask is not None:
        s[~mask] = -np.inf
    if positive_only:
        s[s <= 0] = -np.inf
    limit = min(limit, s.size)
    top = np.argpartition(-s, limit - 1)[:limit] if limit < s.size else np.arange(s.size)
    top = top[np.argsort(-s[top], kind="stable")]
    return [int(i) for i in top if np.isfinite(s[i])]


def fuse_documents(
    rankings: Sequence[tuple[list[int], float]], chunks: Sequence[Chunk], k: int = RRF_K
) -> list[tuple[str, float, int]]:
    """Reciprocal rank fusion at document level.

    Each retriever's chunk ranking is collapsed to a document ranking (a document ranks where its best chunk
    ranks); documents are then scored by ``sum(weight / (k + rank))``. The passage shown for a document is
    its chunk with the best chunk-level fused score.

    Args:
        rankings: (chunk indices best first, weight) per retriever.
        chunks: the chunk table the indices refer to.
        k: the RRF constant.

    Returns:
        (doc_id, fused score, best chunk index), best first.
    """
    doc_score: dict[str, float] = {}
    chunk_score: dict[int, float] = {}
    for ranking, weight in rankings:
        seen: set[str] = set()
        for r, idx in enumerate(ranking):
            chunk_score[idx] = chunk_score.get(idx, 0.0) + weight / (k + r + 1)
            doc = chunks[idx].doc_id
            if doc in seen:
                continue
            seen.add(doc)
            doc_score[doc] = doc_score.get(doc, 0.0) + weight / (k + len(seen))
    best_chunk: dict[str, int] = {}
    for idx, s in chunk_score.items():
        doc = chunks[idx].doc_id
        if doc not in best_chunk or s > chunk_score[best_chunk[doc]]:
            best_chunk[doc] = idx
    ordered = sorted(doc_score.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(doc, s, best_chunk[doc]) for doc, s in ordered]
