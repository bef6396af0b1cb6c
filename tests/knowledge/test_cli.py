"""``opsloop knowledge index|search|stats`` against a private store (BM25 only, so no model loads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kb_helpers import write_runbook

from cluster.cli import main


def test_index_search_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "docs"
    d.mkdir()
    write_runbook(d, "pump.md", "mop-pump", "MOP: Prime the booster pump", "Prime the booster pump after a drain.")
    (d / "empty.md").write_text("")
    store = str(tmp_path / "store")
    assert main(["knowledge", "index", str(d), "--store", store, "--no-dense"]) == 0
    out = capsys.readouterr()
    assert "1 added" in out.out and "empty.md: empty file" in out.err
    assert main(["knowledge", "search", "booster pump priming", "--store", store, "--no-dense", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["doc_id"] == "mop-pump"
    assert {"doc_id", "type", "step_id", "score", "text"} <= set(rows[0])
    assert main(["knowledge", "stats", "--store", store, "--no-dense"]) == 0
    assert "documents: 1" in capsys.readouterr().out


def test_default_store_has_bundled_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(tmp_path / "data"))
    assert main(["knowledge", "search", "coolant flow degraded", "--type", "eop", "--no-dense", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["type"] == "eop" for r in rows)
    assert (tmp_path / "data" / "knowledge" / "documents.json").exists()


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knowledge", "index", str(tmp_path / "missing"), "--store", str(tmp_path / "s"), "--no-dense"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["knowledge", "search", "x", "--store", str(tmp_path / "nothing"), "--no-dense"]) == 1
    assert "no index" in capsys.readouterr().err
