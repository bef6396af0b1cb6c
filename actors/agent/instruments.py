"""The agent shell's instruments around its ports: spans and metrics for retrieval and the model calls.

The planner (``actors.agent.propose.propose``) stays pure; the shell hands it these wrappers, which time
each call, record it as a span of the current incident's trace and feed the agent's metrics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from actors.agent.planner import Knowledge
from actors.agent.propose import Completer
from actors.metrics import RATE_BUCKETS, Metrics
from actors.tracing import stage_span


class StreamingCompleter(Completer, Protocol):
    """A completer that can also yield the answer piece by piece (a piece is about one token)."""

    def stream(self, messages: list[dict[str, str]], max_tokens: int,
               schema: dict[str, Any] | None = None) -> AsyncIterator[str]: ...


class TracedKnowledge:
    """``Knowledge`` whose ``for_event`` is a ``retrieval`` span and a latency observation."""

    def __init__(self, inner: Knowledge, meter: Metrics) -> None:
        self.inner = inner
        self.meter = meter

    def for_event(self, kind: str, subject: str, data: Mapping[str, object], top_k: int = 5) -> list[Any]:
        with stage_span("retrieval", "agent.retrieval", "agent", continue_current=True,
                        attrs={"opsloop.query_kind": kind, "opsloop.subject": subject, "opsloop.top_k": top_k}) as span:
            t0 = time.perf_counter()
            passages = self.inner.for_event(kind, subject, data, top_k)
            self.meter.observe("opsloop_retrieval_latency_seconds", time.perf_counter() - t0)
            span.set_attribute("opsloop.passages", len(passages))
            return passages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TracedCompleter:
    """``Completer`` whose calls are ``llm`` spans; streamed calls also give time to first token and tokens/s."""

    def __init__(self, inner: Completer, meter: Metrics) -> None:
        self.inner = inner
        self.meter = meter

    async def complete(self, messages: list[dict[str, str]], max_tokens: int,
                       schema: dict[str, Any] | None = None) -> str:
        with stage_span("llm", "agent.llm", "agent", continue_current=True,
                        attrs={"opsloop.max_tokens": max_tokens, "opsloop.messages": len(messages),
                               "opsloop.llm.constrained": schema is not None}) as span:
            t0 = time.perf_counter()
            stream = getattr(self.inner, "stream", None)
            if not callable(stream):
                text = await self.inner.complete(messages, max_tokens, schema)
                span.set_attribute("opsloop.llm.streamed", False)
                span.set_attribute("opsloop.llm.latency_s", time.perf_counter() - t0)
                return text
            parts: list[str] = []
            first = last = None
            async for piece in stream(messages, max_tokens, schema):
                last = time.perf_counter()
                if first is None and piece:
                    first = last
                    self.meter.observe("opsloop_llm_ttft_seconds", first - t0)
                    span.set_attribute("opsloop.llm.ttft_s", first - t0)
                parts.append(piece)
            pieces = sum(1 for p in parts if p)
            if first is not None and last is not None and pieces > 1 and last > first:
                rate = (pieces - 1) / (last - first)
                self.meter.observe("opsloop_llm_tokens_per_second", rate, buckets=RATE_BUCKETS)
                span.set_attribute("opsloop.llm.tokens_per_s", rate)
            span.set_attribute("opsloop.llm.streamed", True)
            span.set_attribute("opsloop.llm.pieces", pieces)
            return "".join(parts)
