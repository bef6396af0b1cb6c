"""Chat endpoint overhead: the ingress (HTTP + Serve hop) and the grounding, against the same vLLM engine direct.

Starts opsloop (embedded Redis, local Ray, vLLM serving the default SmolLM2 on CPU), then measures, at
concurrency 1 and 8, time to first token (TTFT), time per output token (TPOT) and total latency of:

- ``direct``: the vLLM deployment called through its Serve handle (``chat_stream``), no HTTP, no grounding;
- ``endpoint raw``: ``POST /v1/chat/completions`` with the raw model (ingress only);
- ``endpoint opsloop``: the same with ``model=opsloop`` (ingress + grounding: twin, agent, retrieval, longer prompt).

Every request generates exactly ``--tokens`` tokens (``ignore_eos``), so the rows differ only by the path.
Writes the table into ``docs/benchmarks.md`` under ``## Chat endpoint overhead`` (only that section).

Usage: .venv/bin/python bench/chat_overhead.py [--tokens 64] [--requests 16] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import httpx
from httpx_sse import aconnect_sse

from serving.fact_check import LABEL
from serving.llm import sse_data


class Timing(NamedTuple):
    first: float  # s to the first content token
    total: float  # s to the end of the stream
    tokens: int
    words: float | None  # s to the model's words (None: withheld by the fact check)


QUESTION = "The coolant flow to n01 dropped and its GPUs are heating up. What should I do?"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Chat endpoint overhead"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _timed(payloads: AsyncIterator[str], t0: float, facts_first: bool = False) -> Timing:
    """Time to the first content token, total time, tokens, and time to the model's words of one stream of SSE
    payloads. ``facts_first`` (the ``opsloop`` model): the answer opens with the facts, and the model's words
    start at the fact check's label (none when the check withheld them); else the model's words are the content."""
    first = words = None
    n = chunks = 0
    text = ""
    async for payload in payloads:
        if payload == "[DONE]":
            continue
        data = json.loads(payload)
        if data.get("usage"):
            n = data["usage"]["completion_tokens"]
        if data.get("choices") and (piece := data["choices"][0]["delta"].get("content")):
            chunks += 1
            now = time.perf_counter() - t0
            first = first if first is not None else now
            text += piece
            if words is None and (not facts_first or LABEL in text):
                words = now
    return Timing(first or 0.0, time.perf_counter() - t0, n or chunks, words)


def _body(model: str, tokens: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], "stream": True,
            "max_tokens": tokens, "ignore_eos": True, "temperature": 0.0, "stream_options": {"include_usage": True}}


async def one_http(client: httpx.AsyncClient, model: str, tokens: int) -> Timing:
    t0 = time.perf_counter()
    async with aconnect_sse(client, "POST", "/v1/chat/completions", json=_body(model, tokens)) as source:
        source.response.raise_for_status()
        return await _timed((sse.data async for sse in source.aiter_sse()), t0, facts_first=model == "opsloop")


async def one_direct(handle: object, model: str, tokens: int) -> Timing:
    t0 = time.perf_counter()
    gen = handle.options(stream=True).chat_stream.remote(_body(model, tokens))  # type: ignore[attr-defined]
    return await _timed(sse_data(item.encode() async for item in gen if isinstance(item, str)), t0)


async def run(fn: object, concurrency: int, requests: int) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)

    async def guarded() -> Timing:
        async with sem:
            return await fn()  # type: ignore[operator]

    await asyncio.gather(*(guarded() for _ in range(concurrency)))  # warm-up
    t0 = time.perf_counter()
    results = await asyncio.gather(*(guarded() for _ in range(requests)))
    wall = time.perf_counter() - t0
    ttft = [r[0] for r in results]
    total = [r[1] for r in results]
    tpot = [(r[1] - r[0]) / max(r[2] - 1, 1) for r in results]
    words = [r.words for r in results if r.words is not None]
    return {"ttft_ms": 1000 * statistics.median(ttft), "tpot_ms": 1000 * statistics.median(tpot),
            "total_ms": 1000 * statistics.median(total), "tok_s": sum(r[2] for r in results) / wall,
            "words_ms": 1000 * statistics.median(words) if words else float("nan"), "kept": len(words),
            "n": len(results)}


def table(rows: dict[tuple[str, int], dict[str, float]], tokens: int, requests: int) -> str:
    out = [
        SECTION, "",
        f"`bench/chat_overhead.py`: SmolLM2-135M-Instruct on vLLM (CPU, 2 cores, in a Ray Serve replica), {tokens} "
        f"output tokens per request (`ignore_eos`), {requests} requests per row after a warm-up, medians. "
        "`direct` calls the vLLM deployment through its Serve handle; `raw` goes through the HTTP ingress with the "
        "raw model; `opsloop` adds the grounding (twin snapshot, events, incidents, BM25 retrieval) and its longer "
        "prompt. An `opsloop` answer opens with the facts taken from the fleet (its TTFT is theirs); *model words* is "
        "when the model's checked words begin (after the whole model answer, since the fact check needs all of it; "
        "*kept* counts the answers whose words the check let through). Ratios are against `direct` at the same "
        "concurrency.", "",
        "| path | concurrency | TTFT ms | TPOT ms | total ms | tok/s | model words ms (kept) | TTFT × | total × |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (path, c), r in rows.items():
        d = rows[("direct", c)]
        out.append(f"| {path} | {c} | {r['ttft_ms']:.0f} | {r['tpot_ms']:.1f} | {r['total_ms']:.0f} | "
                   f"{r['tok_s']:.1f} | {r['words_ms']:.0f} ({r['kept']}/{r['n']}) | "
                   f"{r['ttft_ms'] / d['ttft_ms']:.2f} | {r['total_ms'] / d['total_ms']:.2f} |")
    return "\n".join(out) + "\n"


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    doc = pattern.sub(text + "\n", doc) if pattern.search(doc) else doc.rstrip("\n") + "\n\n" + text
    DOC.write_text(doc)


async def measure(url: str, token: str, deployment: str, app: str, model: str, tokens: int, requests: int) -> dict:
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app)
    rows: dict[tuple[str, int], dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as client:
        for c in (1, 8):
            rows[("direct", c)] = await run(lambda: one_direct(handle, model, tokens), c, requests)
            rows[("raw", c)] = await run(lambda: one_http(client, model, tokens), c, requests)
            rows[("opsloop", c)] = await run(lambda: one_http(client, "opsloop", tokens), c, requests)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    from cluster import deploy
    from cluster.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="opsloop-bench-")), port=free_port(),
                        namespace="bench", demo_fault=True)
    models = Path(".opsloop/models")  # reuse a converted default model when there is one
    if (models / "smollm2-135m-instruct" / "opsloop-converted.json").exists():
        settings.models_dir.parent.mkdir(parents=True, exist_ok=True)
        settings.models_dir.symlink_to(models.resolve())
    rt = deploy.start(settings, progress=print)
    try:
        assert deploy.wait_healthy(rt.url, 120)
        from cluster.model_files import DEFAULT_MODEL_ID

        deployment = deploy.LLM_PREFIX + deploy._deployment_suffix(DEFAULT_MODEL_ID)
        token = rt.settings.token_file.read_text().strip()  # the chat answers from fleet data: it needs a token
        rows = asyncio.run(measure(rt.url, token, deployment, deploy.LLM_APP, DEFAULT_MODEL_ID, args.tokens,
                                   args.requests))
    finally:
        deploy.stop(rt)
    text = table(rows, args.tokens, args.requests)
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
