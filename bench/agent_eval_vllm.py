"""vLLM in a process of its own for ``bench/agent_eval.py`` and ``bench/chat_eval.py`` (vLLM must start in a
process that has not imported torch or llama-index): :class:`VllmWorker` spawns this file and sends it batches of
chat requests, each with its JSON schema; the child answers a whole batch with one ``LLM.chat`` call, each request
decoded under its schema (structured outputs). The engine takes opsloop's own arguments
(``serving.llm_config.engine_kwargs`` of the default settings: on CPU a 256 MiB KV cache, eager mode, the guidance
backend without free whitespace), greedy decoding.

Protocol: one JSON object per line; the child's stdout carries only the protocol (vLLM's logs go to stderr).
A batch is ``{"requests": [...]}``, answered by one ``{"answers": [...]}``. ``bench/chat_eval.py`` also streams one
request at a time, as the chat endpoint does: ``{"stream": request}`` is answered by ``{"delta": text}`` lines as
the engine produces them (its own step loop, ``RequestOutputKind.DELTA``), then one ``{"done": ...}`` line, or a
``{"stream_error": message}`` line for a request the engine refuses (a prompt longer than the context).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class VllmWorker:
    """The parent's end: start the child when first asked, send batches, read answers, stop it."""

    def __init__(self, model: str, log: Path) -> None:
        self.model, self.log = model, log
        self.proc: subprocess.Popen[str] | None = None
        self.engine: dict[str, Any] = {}
        self.load_s: float | None = None
        self.batches: list[dict[str, Any]] = []
        self.streams: list[dict[str, Any]] = []

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        print(f"vLLM       starting on {self.model} (log: {self.log})", file=sys.stderr)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), self.model], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                     text=True)
        self.engine = self._read()  # the child reports ready or an error, or dies (EOF)
        self.load_s = round(time.perf_counter() - t0, 1)
        print(f"vLLM       ready after {self.load_s} s: {self.engine}", file=sys.stderr)
        return self.proc

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the vLLM worker exited (code {self.proc.poll()}); see {self.log}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"the vLLM worker failed: {msg['error']}")
        return msg

    def chat(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers (``text``, ``finish``, ``prompt_tokens``, ``gen_tokens``) to ``messages``/``schema``/``max_tokens``
        requests, in order, from one batch."""
        proc = self.proc or self._start()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"requests": requests}) + "\n")
        proc.stdin.flush()
        reply = self._read()
        self.batches.append({"requests": len(requests), "seconds": reply["seconds"],
                             "gen_tokens": sum(a["gen_tokens"] for a in reply["answers"])})
        print(f"vLLM       batch of {len(requests)} answered in {reply['seconds']} s", file=sys.stderr)
        return reply["answers"]

    def start(self) -> dict[str, Any]:
        """Start the child now (it starts when first asked otherwise); returns what its engine reported."""
        if self.proc is None:
            self._start()
        return self.engine

    def stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """One chat request (``messages``, ``max_tokens``; optional ``temperature``, greedy when unset,
        ``top_p``, ``stop``, ``seed``) streamed: ``{"delta": text}`` items as the engine makes them, then
        ``{"done": true, "finish", "prompt_tokens", "gen_tokens", "first_token_s", "seconds"}``, or
        ``{"stream_error": message}``. The rest of the answer is read even when the caller stops early, so the next
        request starts clean."""
        proc = self.proc or self._start()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"stream": request}) + "\n")
        proc.stdin.flush()
        finished = False
        try:
            while not finished:
                msg = self._read()
                finished = bool(msg.get("done")) or "stream_error" in msg
                if finished and msg.get("done"):
                    self.streams.append({k: msg.get(k) for k in ("prompt_tokens", "gen_tokens", "first_token_s",
                                                                 "seconds")})
                yield msg
        finally:
            while not finished:  # the caller stopped reading: drain this answer off the pipe
                msg = self._read()
                finished = bool(msg.get("done")) or "stream_error" in msg

    def report(self) -> dict[str, Any]:
        out = {"load_s": self.load_s, "engine": self.engine, "batches": self.batches}
        return out | ({"streams": self.streams} if self.streams else {})

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(model: str) -> None:
    """The child: load the model, then answer batches until stdin closes."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed (vLLM logs, progress bars) goes to stderr, not into the protocol
    sys.path.insert(0, str(ROOT))
    try:
        from cluster.llm_spec import llm_spec
        from cluster.settings import Settings
        from serving.llm_config import engine_kwargs, supported_engine_args

        kw, _ = engine_kwargs(llm_spec(Settings()), supported_engine_args())
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        llm = LLM(model=model, distributed_executor_backend="uni", **kw)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops
        proto.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        raise
    import vllm

    shown = {k: v for k, v in kw.items() if k in ("max_model_len", "dtype", "kv_cache_memory_bytes", "enforce_eager",
                                                  "max_num_seqs", "structured_outputs_config")}
    proto.write(json.dumps({"ready": True, "vllm": vllm.__version__, "engine": shown}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if "stream" in msg:
            _stream_one(llm, msg["stream"], proto)
            continue
        reqs = msg["requests"]
        params = [SamplingParams(max_tokens=r["max_tokens"], temperature=0.0, structured_outputs=(
            StructuredOutputsParams(json=r["schema"], disable_any_whitespace=True) if r["schema"] else None))
            for r in reqs]
        t0 = time.perf_counter()
        outs = llm.chat([r["messages"] for r in reqs], params, use_tqdm=False)
        answers = [{"text": o.outputs[0].text, "finish": o.outputs[0].finish_reason,
                    "prompt_tokens": len(o.prompt_token_ids or []), "gen_tokens": len(o.outputs[0].token_ids)}
                   for o in outs]
        proto.write(json.dumps({"answers": answers, "seconds": round(time.perf_counter() - t0, 1)}) + "\n")


def _stream_one(llm: Any, r: dict[str, Any], proto: Any) -> None:
    """Answer one request piece by piece: rendered as ``LLM.chat`` renders it, then the engine's own step loop
    with delta outputs (``LLM.chat`` itself only returns finished answers)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    t0 = time.perf_counter()
    engine = llm.llm_engine
    try:
        temperature = r.get("temperature")
        params = SamplingParams(max_tokens=r["max_tokens"], temperature=0.0 if temperature is None else temperature,
                                top_p=r.get("top_p") or 1.0, stop=r.get("stop"), seed=r.get("seed"),
                                output_kind=RequestOutputKind.DELTA)
        prompt = llm._preprocess_chat_one(r["messages"])  # LLM.chat's rendering (chat template, special tokens)
        engine.add_request(f"stream-{time.monotonic_ns()}", prompt, params)
    except Exception as exc:  # noqa: BLE001 - a request the engine refuses (too long …): the caller's error
        proto.write(json.dumps({"stream_error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    first, gen, done = None, 0, {"done": True, "finish": None, "prompt_tokens": 0}
    while engine.has_unfinished_requests():
        for o in engine.step():
            c = o.outputs[0]
            gen += len(c.token_ids)
            if c.text:
                first = round(time.perf_counter() - t0, 3) if first is None else first
                proto.write(json.dumps({"delta": c.text}) + "\n")
            if o.finished:
                done.update(finish=c.finish_reason, prompt_tokens=len(o.prompt_token_ids or []))
    done.update(gen_tokens=gen, first_token_s=first, seconds=round(time.perf_counter() - t0, 3))
    proto.write(json.dumps(done) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1])
