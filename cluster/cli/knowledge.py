"""``opsloop knowledge``: index manuals and runbooks, search them, show index statistics, lint runbooks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cluster.cli import CliError

_TYPES = ("manual", "sop", "mop", "eop", "experience")


def register(subparsers: Any) -> None:
    """Add ``knowledge index|search|stats|lint`` to the ``opsloop`` parser."""
    parser = subparsers.add_parser(
        "knowledge",
        help="index and search manuals, SOP/MOP/EOP runbooks and experience",
        description="The knowledge base the agent cites. Without --store the index lives in the data directory "
        "and includes the bundled corpus.",
    )
    sub = parser.add_subparsers(dest="knowledge_command", metavar="ACTION", required=True)

    p_index = sub.add_parser("index", help="index files or directories (unchanged documents are skipped)")
    p_index.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="Markdown, text, HTML or PDF files/dirs")
    _common(p_index)
    p_index.set_defaults(func=cmd_index)

    p_search = sub.add_parser("search", help="search the index")
    p_search.add_argument("query", help="free text, e.g. 'coolant flow low on cdu-1'")
    p_search.add_argument("--top-k", type=int, default=5, help="number of documents (default 5)")
    p_search.add_argument("--type", choices=_TYPES, default=None, help="only documents of this type")
    p_search.add_argument("--equipment", default=None, help="only documents about this equipment (e.g. cdu)")
    p_search.add_argument(
        "--mode", choices=("hybrid", "bm25", "dense"), default=None, help="retriever (default: hybrid)"
    )
    p_search.add_argument("--json", action="store_true", help="print a JSON array")
    _common(p_search)
    p_search.set_defaults(func=cmd_search)

    p_stats = sub.add_parser("stats", help="documents, chunks and vectors in the index")
    p_stats.add_argument("--json", action="store_true", help="print JSON")
    _common(p_stats)
    p_stats.set_defaults(func=cmd_stats)

    p_lint = sub.add_parser(
        "lint", help="report runbook actions whose numbers their step does not bound (exit 1 on findings)",
        description="Check runbooks before the agent cites them: every action template that sets a number "
        "(set_power_limit watts, set_cooling_setpoint supply_c, set_fan_speed percent) needs a `limits` entry "
        "stating what its step allows (absolute bounds, a change from the live value, per GPU model); see "
        "knowledge/limits.py. Also reports files that do not load, unknown action kinds and missing steps.")
    p_lint.add_argument("paths", nargs="+", type=Path, metavar="DIR", help="runbook files or directories")
    p_lint.set_defaults(func=cmd_lint)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=None, help="index directory (default: <data dir>/knowledge)")
    p.add_argument("--no-dense", action="store_true", help="BM25 only: do not load the embedding model")


def _say(message: str) -> None:
    print(f"opsloop knowledge: {message}", file=sys.stderr)


def _open(args: argparse.Namespace) -> Any:
    """Open the knowledge base; the default store always carries the bundled corpus (indexed incrementally)."""
    from knowledge.retrieval import KnowledgeBase

    dense = False if args.no_dense else None
    if args.store is not None:
        store = args.store.expanduser().resolve()
        if store.exists() and not store.is_dir():
            raise CliError(f"--store {store} is not a directory")
        return KnowledgeBase.open(store, dense=dense)
    from cluster.settings import Settings

    settings = Settings()
    return KnowledgeBase.bundled(
        extra_dirs=settings.knowledge_dirs,
        store=settings.knowledge_dir,
        dense=dense,
        on_message=_say,
        progress=sys.stderr.isatty(),
    )


def cmd_index(args: argparse.Namespace) -> int:
    """Index PATHs (and, for the default store, the bundled corpus); report per-file problems on stderr."""
    paths = [p.expanduser() for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or directory: {', '.join(missing)}")
    if args.store is not None and not paths:
        raise CliError("nothing to index: give at least one PATH with --store")
    from knowledge.retrieval import KnowledgeBase

    started = time.perf_counter()
    if args.store is not None:
        store = args.store.expanduser().resolve()
        if store.exists() and not store.is_dir():
            raise CliError(f"--store {store} is not a directory")
        kb = KnowledgeBase.open(store, dense=False if args.no_dense else None)
        report = kb.index(paths, on_message=_say, progress=sys.stderr.isatty())
    else:
        from cluster.settings import Settings
        from knowledge.retrieval import BUNDLED_CORPUS

        settings = Settings()
        kb = KnowledgeBase.open(settings.knowledge_dir, dense=False if args.no_dense else None)
        everything = [BUNDLED_CORPUS, *settings.knowledge_dirs, *paths]
        report = kb.index(everything, on_message=_say, progress=sys.stderr.isatty())
    stats = kb.stats()
    print(
        f"indexed in {time.perf_counter() - started:.1f}s: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, {len(report.errors)} skipped; "
        f"{stats['documents']} documents, {stats['chunks']} chunks in {stats['store']}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Print the best passage of each matching document."""
    if not args.query.strip():
        raise CliError("empty query")
    if args.top_k < 1:
        raise CliError("--top-k must be at least 1")
    if args.store is not None and not (args.store.expanduser() / "documents.json").exists():
        raise CliError(f"no index in {args.store}: run `opsloop knowledge index PATH --store {args.store}` first")
    kb = _open(args)
    try:
        passages = kb.search(args.query, top_k=args.top_k, type=args.type, equipment=args.equipment, mode=args.mode)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        rows = [
            {
                "doc_id": p.citation.doc_id,
                "title": p.citation.title,
                "type": p.citation.type,
                "step_id": p.citation.step_id,
                "score": p.citation.score,
                "text": p.text,
                "flags": p.flags,
            }
            for p in passages
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    if not passages:
        print("no match")
    for n, p in enumerate(passages, 1):
        c = p.citation
        step = f" {c.step_id}" if c.step_id else ""
        flag = f"  [{', '.join(p.flags)}]" if p.flags else ""
        print(f"{n}. {c.doc_id}{step} ({c.type}, score {c.score:.4f}){flag}\n   {c.title}")
        snippet = " ".join(c.text.split())
        print(f"   {snippet[:200]}{'…' if len(snippet) > 200 else ''}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print counts of documents by type, chunks and vectors."""
    if args.store is not None and not (args.store.expanduser() / "documents.json").exists():
        raise CliError(f"no index in {args.store}")
    stats = _open(args).stats()
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"store:     {stats['store']}")
    print(f"documents: {stats['documents']} ({', '.join(f'{k} {v}' for k, v in stats['by_type'].items())})")
    print(f"chunks:    {stats['chunks']}")
    print(f"vectors:   {stats['vectors']} ({'hybrid BM25 + dense' if stats['dense'] else 'BM25 only'})")
    if stats["flagged"]:
        print(f"flagged:   {', '.join(stats['flagged'])}")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    """Print one line per finding; exit 1 when there is any."""
    from knowledge.lint import lint

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or directory: {', '.join(missing)}")
    count, findings = lint(p.expanduser() for p in args.paths)
    for f in findings:
        print(f)
    print(f"{count} documents, {len(findings)} finding(s)", file=sys.stderr)
    return 1 if findings else 0
