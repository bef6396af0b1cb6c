"""The chat model port: :class:`ChatModel` and the types its callers and backends share.

The backends (``serving/llm.py``), the HTTP endpoint (``serving/chat.py``) and the agent's adapter
(``cluster/agent_llm.py``) import this module; none of them depends on another for the port.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


def approx_tokens(text: str) -> int:
    """A cheap token count (words and punctuation), used where no tokenizer is at hand (``llm=none``)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class ChatError(Exception):
    """A request the caller can fix (or a dead backend), carried to the HTTP layer as an OpenAI error."""

    def __init__(
        self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        """The error as OpenAI sends it: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters passed through to the model."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    ignore_eos: bool | None = None  # vLLM's extension: generate exactly max_tokens (benchmarks)
    #: Structured output: the answer must be JSON valid against this schema (OpenAI's ``response_format``; vLLM
    #: enforces it while decoding, so every answer parses).
    json_schema: dict[str, Any] | None = None


@dataclass
class Delta:
    """A piece of an answer; the last one carries ``finish_reason`` and, when known, token usage."""

    text: str
    finish_reason: str | None = None
    usage: dict[str, int] | None = field(default=None)


class ChatModel(Protocol):
    """A language model behind the chat endpoint (vLLM on Serve, an external OpenAI server, or none)."""

    @property
    def name(self) -> str | None:
        """The raw model's id as listed by ``/v1/models``; ``None`` when there is no model."""
        ...

    @property
    def context_length(self) -> int:
        """Most prompt + answer tokens one request may use."""
        ...

    async def start(self) -> None:
        """Resolve what must be asked once (an external server's model name); idempotent."""
        ...

    def stream(self, messages: list[dict[str, str]], params: GenParams) -> AsyncIterator[Delta]:
        """Generate an answer piece by piece; raises :class:`ChatError` for bad requests (too long …)."""
        ...
