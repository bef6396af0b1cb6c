"""Indexing directories: bad files are reported and skipped, the rest is indexed, re-indexing is incremental."""

from __future__ import annotations

from pathlib import Path

from kb_helpers import make_pdf, write_runbook

from knowledge.retrieval import KnowledgeBase


def _messy_dir(root: Path) -> Path:
    d = root / "docs"
    d.mkdir()
    write_runbook(d, "good.md", "mop-good", "MOP: Replace the widget", "Widgets wear out.")
    write_runbook(d, "other.md", "mop-good", "MOP: Another widget", "Same id as good.md.")
    (d / "empty.md").write_bytes(b"")
    (d / "corrupt.pdf").write_bytes(b"%PDF-1.4\n%broken\n1 0 obj <<")
    (d / "garbage.txt").write_bytes(bytes(range(256)) * 64)
    (d / "broken.md").write_text("---\nid: x\nequipment: [a, b\n---\n# X\ntext\n")
    with (d / "huge.txt").open("wb") as fh:
        fh.write(b"0123456789abcdef" * (50 * 1024 * 1024 // 16))
    make_pdf(d / "chiller.pdf", ["Chiller manual", "Reset the compressor after a high pressure trip."])
    (d / "notes.html").write_text("<h1>Valve notes</h1><p>Exercise the isolation valves monthly.</p>")
    return d


def test_bad_files_are_reported_and_the_rest_indexed(tmp_path: Path) -> None:
    d = _messy_dir(tmp_path)
    messages: list[str] = []
    kb = KnowledgeBase.open(tmp_path / "store", dense=False)
    report = kb.index([d], on_message=messages.append)
    assert sorted(report.added) == ["chiller", "mop-good", "notes"]
    bad = {Path(e.path).name: e.reason for e in report.errors}
    assert set(bad) == {"other.md", "empty.md", "corrupt.pdf", "garbage.txt", "broken.md", "huge.txt"}
    assert "duplicate id 'mop-good'" in bad["other.md"]
    assert "empty" in bad["empty.md"] and "corrupt PDF" in bad["corrupt.pdf"]
    assert "binary" in bad["garbage.txt"] and "too large" in bad["huge.txt"] and "YAML" in bad["broken.md"]
    for name in bad:  # one clear line per file, naming the file
        assert any(m.startswith(str(d / name)) for m in messages)
    assert kb.search("compressor high pressure trip", top_k=1)[0].citation.doc_id == "chiller"
    reopened = KnowledgeBase.open(tmp_path / "store", dense=False)
    assert sorted(d.doc_id for d in reopened.documents()) == ["chiller", "mop-good", "notes"]
    assert reopened.stats()["chunks"] == kb.stats()["chunks"]


def test_reindex_skips_unchanged_updates_changed_and_prunes_removed(tmp_path: Path) -> None:
    d = tmp_path / "docs"
    d.mkdir()
    write_runbook(d, "a.md", "mop-a", "MOP: Alpha", "Alpha text.")
    b = write_runbook(d, "b.md", "mop-b", "MOP: Bravo", "Bravo text.")
    c = write_runbook(d, "c.md", "mop-c", "MOP: Charlie", "Charlie text.")
    store = tmp_path / "store"
    first = KnowledgeBase.open(store, dense=False).index([d])
    assert sorted(first.added) == ["mop-a", "mop-b", "mop-c"]
    write_runbook(d, "b.md", "mop-b", "MOP: Bravo", "Bravo text, now about zeppelins.")
    c.unlink()
    kb = KnowledgeBase.open(store, dense=False)
    second = kb.index([d])
    assert second.unchanged == ["mop-a"] and second.updated == ["mop-b"] and second.removed == ["mop-c"]
    assert kb.search("zeppelins", top_k=1)[0].citation.doc_id == "mop-b"
    assert kb.document("mop-c") is None
    assert all(c.doc_id != "mop-c" for c in kb.state.chunks())
    assert b.exists()


def test_broken_edit_keeps_the_previous_version(tmp_path: Path) -> None:
    d = tmp_path / "docs"
    d.mkdir()
    write_runbook(d, "a.md", "mop-a", "MOP: Alpha", "Alpha text about turbines.")
    kb = KnowledgeBase.open(tmp_path / "store", dense=False)
    kb.index([d])
    (d / "a.md").write_text("---\nid: [\n---\n")
    messages: list[str] = []
    report = kb.index([d], on_message=messages.append)
    assert report.errors and "previously indexed version is kept" in messages[0]
    assert kb.search("turbines", top_k=1)[0].citation.doc_id == "mop-a"
