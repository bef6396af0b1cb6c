"""Retrieval evaluation: recall@1, recall@5 and MRR of BM25, dense and hybrid retrieval, plus query latency.

Usage::

    .venv/bin/python bench/retrieval_eval.py                      # bundled corpus, our question set
    .venv/bin/python bench/retrieval_eval.py --corpus DIR --questions Q.yaml --no-write

A question file is a YAML list of ``{q: "...", doc: expected_doc_id, style: operator|paraphrase|event}``. The
results table goes into ``docs/benchmarks.md`` under ``## Retrieval`` (only that section is rewritten).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from knowledge.retrieval import BUNDLED_CORPUS, KnowledgeBase  # noqa: E402

QUESTIONS = ROOT / "tests" / "knowledge_eval" / "questions.yaml"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"
MODES = ("bm25", "dense", "hybrid")


def evaluate(kb: KnowledgeBase, questions: list[dict[str, str]], mode: str, depth: int = 10) -> dict[str, float]:
    """Recall@1, recall@5, MRR@depth and latency percentiles (ms) of one retriever over a question set."""
    hits1 = hits5 = 0
    rr = 0.0
    lat: list[float] = []
    for item in questions:
        t = time.perf_counter()
        passages = kb.search(item["q"], top_k=depth, mode=mode)  # type: ignore[arg-type]
        lat.append((time.perf_counter() - t) * 1000)
        ranked = [p.citation.doc_id for p in passages]
        if item["doc"] in ranked:
            r = ranked.index(item["doc"]) + 1
            hits1 += r == 1
            hits5 += r <= 5
            rr += 1 / r
    n = max(len(questions), 1)
    lat.sort()
    return {
        "r1": hits1 / n,
        "r5": hits5 / n,
        "mrr": rr / n,
        "p50": statistics.median(lat) if lat else 0.0,
        "p99": lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))] if lat else 0.0,
    }


def scaled_latency(kb: KnowledgeBase, questions: list[dict[str, str]], target_chunks: int) -> tuple[int, dict]:
    """Latency on an index grown to ~target_chunks by copying documents under new ids (vectors reused)."""
    state = kb.state
    originals = list(state.documents.values())
    chunks = state.chunks()
    copies = max(0, target_chunks // max(len(chunks), 1))
    vec_by_chunk = dict(state.vectors)
    for n in range(1, copies):
        new_docs = [d.model_copy(update={"doc_id": f"{d.doc_id}-copy{n}", "source": f"copy:{n}"}) for d in originals]
        state.upsert(new_docs)
    for c in state.chunks():
        base = re.sub(r"-copy\d+(?=#)", "", c.chunk_id)
        if c.chunk_id not in state.vectors and base in vec_by_chunk:
            state.vectors[c.chunk_id] = vec_by_chunk[base]
    state.version += 1
    size = len(state.chunks())
    modes = MODES if kb.dense else ("bm25",)
    return size, {m: evaluate(kb, questions, m, depth=5) for m in modes}


def rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_section(markdown: str) -> None:
    """Replace (or append) the ``## Retrieval`` section of docs/benchmarks.md."""
    text = BENCH_DOC.read_text() if BENCH_DOC.exists() else "# Benchmarks\n"
    section = "## Retrieval\n\n" + markdown.strip() + "\n"
    pattern = re.compile(r"^## Retrieval\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    BENCH_DOC.parent.mkdir(parents=True, exist_ok=True)
    BENCH_DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation and print (and by default record) the results table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=BUNDLED_CORPUS, help="directory of documents to index")
    ap.add_argument("--questions", type=Path, default=QUESTIONS, help="YAML question set")
    ap.add_argument("--store", type=Path, default=None, help="index directory to reuse (default: a temp dir)")
    ap.add_argument("--scale-chunks", type=int, default=1000, help="also time queries at about this many chunks")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)

    questions = yaml.safe_load(args.questions.read_text())
    tmp = None if args.store else Path(tempfile.mkdtemp(prefix="opsloop-eval-"))
    store = args.store or tmp
    try:
        t0 = time.perf_counter()
        kb = KnowledgeBase.open(store)
        kb.index([args.corpus], on_message=lambda m: print(m, file=sys.stderr))
        build_s = time.perf_counter() - t0
        stats = kb.stats()
        missing = sorted({q["doc"] for q in questions} - {d.doc_id for d in kb.documents()})
        if missing:
            print(f"warning: expected documents not in the index: {missing}", file=sys.stderr)
        modes = MODES if kb.dense else ("bm25",)
        results = {m: evaluate(kb, questions, m) for m in modes}
        styles = sorted({q.get("style", "all") for q in questions})
        best = "hybrid" if kb.dense else "bm25"
        by_style = {s: evaluate(kb, [q for q in questions if q.get("style", "all") == s], best) for s in styles}
        size, scaled = scaled_latency(kb, questions, args.scale_chunks) if args.scale_chunks else (0, {})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    counts = ", ".join(f"{s} {sum(q.get('style', 'all') == s for q in questions)}" for s in styles)
    lines = [
        f"Corpus: {stats['documents']} documents, {stats['chunks']} chunks; {len(questions)} questions "
        f"({counts}). "
        f"Document-level: a hit is the expected `doc_id` among the top k documents. Machine: 2 cores, no GPU, "
        f"`OMP_NUM_THREADS=1`. Produced by `bench/retrieval_eval.py`.",
        "",
        "| retriever | recall@1 | recall@5 | MRR@10 | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        lines.append(f"| {m} | {r['r1']:.3f} | {r['r5']:.3f} | {r['mrr']:.3f} | {r['p50']:.1f} | {r['p99']:.1f} |")
    lines += ["", "Hybrid by question style:", "", "| style | n | recall@1 | recall@5 | MRR@10 |"]
    lines += ["|---|---|---|---|---|"]
    for s, r in by_style.items():
        n = sum(q.get("style", "all") == s for q in questions)
        lines.append(f"| {s} | {n} | {r['r1']:.3f} | {r['r5']:.3f} | {r['mrr']:.3f} |")
    if scaled:
        lines += ["", f"Query latency with the index grown to {size} chunks (documents copied under new ids):", ""]
        lines += ["| retriever | p50 ms | p99 ms |", "|---|---|---|"]
        lines += [f"| {m} | {r['p50']:.1f} | {r['p99']:.1f} |" for m, r in scaled.items()]
    lines += [
        "",
        f"Index build (parse, chunk, embed {stats['chunks']} chunks, persist): {build_s:.1f} s. "
        f"Peak RSS of the process with the dense model loaded: {rss_mb():.0f} MiB.",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(table)
        print(f"\nwritten to {BENCH_DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
