"""Ingestion: files → documents → chunks (a llama-index ``IngestionPipeline`` with a docstore) → a store.

The docstore keeps every chunk and the content hash of every document, so re-indexing skips documents
whose hash is unchanged. A store directory holds ``docstore.json`` (chunks and hashes), ``documents.json``
(the parsed documents and their source files) and ``vectors.npy`` / ``vector_ids.json`` (dense vectors).
Files are written to temporary names and renamed, ``documents.json`` last, so a crash leaves the previous
index readable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from knowledge.chunking import Chunk, chunk_document
from knowledge.documents import Document, DocumentError, load_document
from knowledge.loaders import SUPPORTED_SUFFIXES

Message = Callable[[str], None]


class FileIssue(BaseModel):
    """A file that was not (re)indexed, and why."""

    path: str
    reason: str


class IndexReport(BaseModel):
    """What one indexing run did."""

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    errors: list[FileIssue] = Field(default_factory=list)


def _chunk_from_node(node: Any) -> Chunk:
    m = node.metadata
    return Chunk(
        chunk_id=node.node_id,
        doc_id=m["doc_id"],
        title=m["title"],
        type=m["type"],
        equipment=tuple(m.get("equipment", ())),
        events=tuple(m.get("events", ())),
        step_id=m.get("step_id"),
        section=m.get("section", ""),
        text=node.text,
        flags=tuple(m.get("flags", ())),
    )


def _make_transform() -> Any:
    from llama_index.core.schema import NodeRelationship, TextNode, TransformComponent

    class SectionChunker(TransformComponent):
        """llama-index transformation: one source document (our JSON) → chunk nodes along sections/steps."""

        def __call__(self, nodes: Sequence[Any], **kwargs: Any) -> list[Any]:
            out: list[Any] = []
            for src in nodes:
                doc = Document.model_validate_json(src.text)
                for order, c in enumerate(chunk_document(doc)):
                    node = TextNode(
                        id_=c.chunk_id,
                        text=c.text,
                        metadata={
                            "doc_id": c.doc_id,
                            "title": c.title,
                            "type": c.type,
                            "equipment": list(c.equipment),
                            "events": list(c.events),
                            "step_id": c.step_id,
                            "section": c.section,
                            "flags": list(c.flags),
                            "order": order,
                        },
                    )
                    node.relationships[NodeRelationship.SOURCE] = src.as_related_node_info()
                    out.append(node)
            return out

    return SectionChunker()


def iter_files(paths: Iterable[Path]) -> Iterable[Path]:
    """Supported files under the given files and directories, sorted, hidden files skipped."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.is_file() and not any(part.startswith(".") for part in rel):
                    yield f
        else:
            yield p


class IndexState:
    """Documents, their chunks and vectors; optionally persisted in a store directory."""

    def __init__(self, store: Path | None = None) -> None:
        """An empty index, or the one persisted in ``store`` when it exists."""
        from llama_index.core.storage.docstore import SimpleDocumentStore

        self.store = Path(store) if store is not None else None
        self.documents: dict[str, Document] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.docstore = SimpleDocumentStore()
        self.version = 0  # bumped on every change, so retrievers know to rebuild
        if self.store is not None and (self.store / "documents.json").exists():
            self._load()

    # --- queries -----------------------------------------------------------------------------------
    def chunks(self) -> list[Chunk]:
        """All chunks, grouped by document in indexing order."""
        by_doc: dict[str, list[tuple[int, Chunk]]] = {d: [] for d in self.documents}
        for node in self.docstore.docs.values():
            doc_id = node.metadata.get("doc_id")
            if doc_id in by_doc:
                by_doc[doc_id].append((int(node.metadata.get("order", 0)), _chunk_from_node(node)))
        return [c for items in by_doc.values() for _, c in sorted(items, key=lambda t: t[0])]

    def source_of(self, doc_id: str) -> str | None:
        """The file a document was read from."""
        doc = self.documents.get(doc_id)
        return doc.source if doc else None

    # --- changes -----------------------------------------------------------------------------------
    def remove(self, doc_id: str) -> None:
        """Drop a document, its chunks, its hash and its vectors."""
        ref = self.docstore.get_ref_doc_info(doc_id)
        for node_id in ref.node_ids if ref else []:
            self.vectors.pop(node_id, None)
        self.docstore.delete_ref_doc(doc_id, raise_error=False)
        self.docstore.delete_document(doc_id, raise_error=False)  # also clears the stored hash
        self.documents.pop(doc_id, None)
        self.version += 1

    def upsert(self, docs: Sequence[Document]) -> tuple[list[str], list[str], list[str]]:
        """Index documents, skipping those whose content hash is unchanged.

        Returns:
            (added, updated, unchanged) doc ids.
        """
        from llama_index.core import Document as LlamaDocument
        from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline

        added: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        to_run = []
        for doc in docs:
            # The source path is not content: moving a file must not re-chunk it.
            src = LlamaDocument(id_=doc.doc_id, text=doc.model_dump_json(exclude={"source"}))
            known = doc.doc_id in self.documents
            if known and self.docstore.get_document_hash(doc.doc_id) == src.hash:
                unchanged.append(doc.doc_id)
                self.documents[doc.doc_id] = doc
                continue
            if known:
                self.remove(doc.doc_id)
            (updated if known else added).append(doc.doc_id)
            self.documents[doc.doc_id] = doc
            to_run.append(src)
        if to_run:
            pipeline = IngestionPipeline(
                transformations=[_make_transform()],
                docstore=self.docstore,
                docstore_strategy=DocstoreStrategy.DUPLICATES_ONLY,
                disable_cache=True,
            )
            nodes = pipeline.run(documents=to_run, show_progress=False)
            self.docstore.add_documents(nodes, allow_update=True)
            self.version += 1
        return added, updated, unchanged

    def missing_vectors(self) -> list[Chunk]:
        """Chunks that have no dense vector yet."""
        return [c for c in self.chunks() if c.chunk_id not in self.vectors]

    def ingest_paths(
        self,
        paths: Sequence[Path],
        on_message: Message | None = None,
        progress: bool = False,
        prune: bool = True,
    ) -> IndexReport:
        """Load every supported file under ``paths`` and index it; bad files are reported, not fatal.

        Args:
            paths: files and directories.
            on_message: called with one line per file problem (and per change).
            progress: show a progress bar on stderr while reading files.
            prune: forget documents whose source file under one of ``paths`` no longer exists.
        """
        say = on_message or (lambda _m: None)
        report = IndexReport()
        files = list(iter_files(paths))
        if progress and len(files) > 20:
            from tqdm import tqdm

            files_iter: Iterable[Path] = tqdm(files, desc="reading", unit="file", leave=False)
        else:
            files_iter = files
        loaded: list[Document] = []
        claimed: dict[str, str] = {}
        for f in files_iter:
            if f.suffix.lower() not in SUPPORTED_SUFFIXES:
                if f.exists():
                    report.errors.append(FileIssue(path=str(f), reason=f"skipped: unsupported file type {f.suffix!r}"))
                    say(f"{f}: skipped: unsupported file type {f.suffix or '(none)'!r}")
                continue
            try:
                doc = load_document(f)
            except DocumentError as exc:
                report.errors.append(FileIssue(path=str(f), reason=exc.reason))
                kept = " (the previously indexed version is kept)" if self._doc_from(str(f)) else ""
                say(f"{f}: {exc.reason}{kept}")
                continue
            other = claimed.get(doc.doc_id) or self._live_owner(doc.doc_id, str(f))
            if other is not None:
                reason = f"duplicate id {doc.doc_id!r}: already indexed from {other}; this file is skipped"
                report.errors.append(FileIssue(path=str(f), reason=reason))
                say(f"{f}: {reason}")
                continue
            claimed[doc.doc_id] = str(f)
            loaded.append(doc)
        # A file that now carries a different id than before: drop the old id.
        for doc in loaded:
            old = self._doc_from(doc.source)
            if old is not None and old != doc.doc_id:
                self.remove(old)
                report.removed.append(old)
        added, updated, unchanged = self.upsert(loaded)
        report.added, report.updated, report.unchanged = added, updated, unchanged
        if prune:
            roots = [Path(p).resolve() for p in paths if Path(p).is_dir()]
            for doc_id, doc in list(self.documents.items()):
                src = Path(doc.source)
                if doc.type != "experience" and not src.exists() and any(r in src.resolve().parents for r in roots):
                    self.remove(doc_id)
                    report.removed.append(doc_id)
                    say(f"{src}: file is gone; removed {doc_id!r} from the index")
        return report

    def _doc_from(self, source: str) -> str | None:
        return next((d.doc_id for d in self.documents.values() if d.source == source), None)

    def _live_owner(self, doc_id: str, source: str) -> str | None:
        """The other file that owns ``doc_id``, if it still exists (a moved file is not a duplicate)."""
        doc = self.documents.get(doc_id)
        if doc is None or doc.source == source or not Path(doc.source).exists():
            return None
        return doc.source

    # --- persistence -------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the index to its store directory (no-op for an in-memory index)."""
        if self.store is None:
            return
        self.store.mkdir(parents=True, exist_ok=True)
        tmp = self.store / ".docstore.json.tmp"
        self.docstore.persist(str(tmp))
        os.replace(tmp, self.store / "docstore.json")
        ids = [cid for cid in self.vectors]
        matrix = np.stack([self.vectors[i] for i in ids]) if ids else np.zeros((0, 384), dtype=np.float32)
        with open(self.store / ".vectors.npy.tmp", "wb") as fh:
            np.save(fh, matrix.astype(np.float32))
        os.replace(self.store / ".vectors.npy.tmp", self.store / "vectors.npy")
        _write_json(self.store / "vector_ids.json", ids)
        _write_json(self.store / "documents.json", [d.model_dump(mode="json") for d in self.documents.values()])

    def _load(self) -> None:
        from llama_index.core.storage.docstore import SimpleDocumentStore

        assert self.store is not None
        docs = json.loads((self.store / "documents.json").read_text())
        self.documents = {d["doc_id"]: Document.model_validate(d) for d in docs}
        if (self.store / "docstore.json").exists():
            self.docstore = SimpleDocumentStore.from_persist_path(str(self.store / "docstore.json"))
        ids_file, vec_file = self.store / "vector_ids.json", self.store / "vectors.npy"
        if ids_file.exists() and vec_file.exists():
            ids = json.loads(ids_file.read_text())
            matrix = np.load(vec_file)
            if len(ids) == len(matrix):
                live = {c.chunk_id for c in self.chunks()}
                self.vectors = {i: matrix[n] for n, i in enumerate(ids) if i in live}


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
