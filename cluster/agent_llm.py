"""The agent's model port over a serving chat model: the composition root's adapter between layers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serving.chat_model import GenParams


class ChatCompleter:
    """``actors.agent.propose.Completer`` over any ``serving.chat_model.ChatModel`` (greedy decoding)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    async def complete(self, messages: list[dict[str, str]], max_tokens: int,
                       schema: dict[str, Any] | None = None) -> str:
        return "".join([piece async for piece in self.stream(messages, max_tokens, schema)])

    async def stream(self, messages: list[dict[str, str]], max_tokens: int,
                     schema: dict[str, Any] | None = None) -> AsyncIterator[str]:
        """The answer piece by piece (the agent's shell times the first token and the decode rate); with
        ``schema``, decoding is constrained to JSON valid against it."""
        params = GenParams(max_tokens=max_tokens, temperature=0.0, json_schema=schema)
        async for delta in self.model.stream(messages, params):
            yield delta.text


def completer_for(llm: str, model: str | None = None, api_key: str | None = None) -> ChatCompleter | None:
    """``none`` → no model; an ``http(s)://…/v1`` URL → that OpenAI-compatible server (its first listed model
    unless ``model`` names one; ``api_key`` is sent as a bearer token, e.g. an opsloop token)."""
    if llm == "none":
        return None
    if llm.startswith(("http://", "https://")):
        from serving.llm import OpenAIModel

        return ChatCompleter(OpenAIModel(base_url=llm.rstrip("/"), model=model, api_key=api_key))
    raise ValueError(f"--llm {llm!r}: expected none or an OpenAI-compatible base URL (http://host:port/v1)")


def completer_from_spec(spec: Any) -> ChatCompleter | None:
    """The agent's model port for the chat model the ingress uses (``llm=none``: no model for the agent)."""
    from serving.llm import make_chat_model

    return None if spec.backend == "none" else ChatCompleter(make_chat_model(spec))
