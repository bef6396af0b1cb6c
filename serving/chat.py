"""The OpenAI-compatible chat endpoint: ``POST /v1/chat/completions`` (plain and SSE) and ``GET /v1/models``.

Two models are listed: ``opsloop`` answers an operator's question grounded in the live twin, the gateway's
approvals, the open incidents and retrieved runbook steps, with citations in the text and in a ``citations``
field; the raw model (when there is one) is plain chat. An ``opsloop`` answer opens with the facts the question
asks for, copied from the data (:mod:`serving.facts`); the model's words follow only if they contradict none of
them (:mod:`serving.fact_check`), so a stream sends the facts at once and the checked words when the model is
done. The router is built from ports: a :class:`serving.chat_model.ChatModel` (backends in ``serving/llm.py``)
and the twin, agent, gateway and knowledge ports, so it runs in-process in tests.
Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.chat_model import ChatError, ChatModel, Delta, GenParams, approx_tokens
from serving.fact_check import model_part
from serving.grounding import (
    SYSTEM_PROMPT,
    Grounding,
    build_grounding,
    facts_block,
    grounded_messages,
    last_user_text,
    retrieval_query,
    sources_line,
    template_answer,
)
from serving.ports import Agent, Gateway, Twin

log = logging.getLogger("opsloop.chat")

OPSLOOP_MODEL = "opsloop"
#: Each grounding call (twin, agent, gateway) gets this long; a slow twin makes a thinner answer, not a hung one.
GROUNDING_TIMEOUT_S = 5.0
PASSAGES = 3
#: The gateway's newest approvals the facts and the checker know (pending ones among them are listed).
APPROVALS_READ = 50
#: In place of the model's words when the model fails after the facts went out (the stream is already 200).
NO_WORDS = "The model gave no words this time ({why}); the facts above stand on their own."


def error_response(exc: ChatError) -> JSONResponse:
    """A :class:`ChatError` as the HTTP response OpenAI sends."""
    return JSONResponse(exc.body(), status_code=exc.status)


class KnowledgePort(Protocol):
    def search(self, query: str, top_k: int = 5) -> list[Any]: ...


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(pattern=r"^(system|user|assistant|developer|tool)$")
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The part of OpenAI's chat request we act on; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    n: int = Field(1, ge=1, le=1)
    stream_options: dict[str, Any] | None = None

    def params(self, default_max_tokens: int) -> GenParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return GenParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature, top_p=self.top_p, stop=stop, seed=self.seed, ignore_eos=self.ignore_eos,
        )


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` substituted in place (OpenAPI resolves ``$ref`` from the document root)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


_OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}}}}}
#: Chat's body is parsed by hand (so that errors keep OpenAI's shape) and documented here for clients and fuzzers.
_CHAT_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True,
                    "content": {"application/json": {"schema": _inline(ChatRequest.model_json_schema())}}},
    "responses": {
        "200": {"description": "a chat completion, or server-sent events with `stream: true`",
                "content": {"application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}}}},
        **{str(code): {"description": why, "content": {"application/json": {"schema": _OPENAI_ERROR}}}
           for code, why in ((400, "malformed JSON, an invalid field, or a prompt longer than the context"),
                             (404, "unknown model"), (422, "invalid request"), (500, "the model failed"),
                             (502, "the external model server failed"), (503, "the model is not ready"))},
    },
}


async def parse_request(request: Request) -> ChatRequest:
    """The body as a :class:`ChatRequest`, or a :class:`ChatError` naming what is wrong."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChatError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise ChatError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        raise ChatError(400, f"{param or 'body'}: {first.get('msg', 'invalid')}", param=param or None,
                        code="invalid_value") from exc


class ChatService:
    """Grounding and wire format over the ports; :func:`build_chat_router` exposes it over HTTP."""

    def __init__(
        self, model: ChatModel, twin: Twin | None, agent: Agent | None, knowledge: KnowledgePort | None,
        default_max_tokens: int = 256, gateway: Gateway | None = None,
    ) -> None:
        self.model = model
        self.twin, self.agent, self.knowledge, self.gateway = twin, agent, knowledge, gateway
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())

    async def models(self) -> dict[str, Any]:
        """The ``/v1/models`` list."""
        await self.model.start()
        ids = [OPSLOOP_MODEL] + ([self.model.name] if self.model.name else [])
        return {"object": "list", "data": [
            {"id": i, "object": "model", "created": self.created, "owned_by": "opsloop",
             **({"max_model_len": self.model.context_length} if i != OPSLOOP_MODEL else {})}
            for i in ids
        ]}

    async def _call(self, coro: Any, default: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, GROUNDING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a missing fact thins the answer; it does not fail it
            log.warning("grounding call failed", exc_info=True)
            return default

    async def ground(self, messages: Sequence[Mapping[str, Any]]) -> Grounding:
        """Gather the live facts and the runbook passages for the latest question."""
        snapshot = await self._call(self.twin.snapshot(), None) if self.twin else None
        events = await self._call(self.twin.recent_events(20), []) if self.twin else []
        status = await self._call(self.agent.status(), None) if self.agent else None
        approvals = await self._call(self.gateway.list(limit=APPROVALS_READ), None) if self.gateway else None
        passages: list[Any] = []
        question = last_user_text(messages)
        if self.knowledge is not None and question.strip():
            query = retrieval_query(question, status)
            passages = await asyncio.to_thread(self.knowledge.search, query, PASSAGES)
        return build_grounding(snapshot, events, status, passages, approvals=approvals, question=question)

    async def answer(self, req: ChatRequest) -> tuple[AsyncIterator[Delta], Grounding | None]:
        """Pick the model, ground when it is ``opsloop``, and start generating (errors raise before any output)."""
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        await self.model.start()
        if req.model not in (OPSLOOP_MODEL, self.model.name):
            known = ", ".join(m["id"] for m in (await self.models())["data"])
            raise ChatError(404, f"The model `{req.model}` does not exist. Models: {known}", param="model",
                            code="model_not_found")
        params = req.params(self.default_max_tokens)
        if req.model != OPSLOOP_MODEL:
            return await _primed(self.model.stream([_plain(m) for m in messages], params)), None
        grounding = await self.ground(messages)
        if self.model.name is None:
            used = sum(approx_tokens(_plain(m)["content"]) for m in messages)
            if used > self.model.context_length:
                raise ChatError(
                    400, f"This model's maximum context length is {self.model.context_length} tokens; the "
                    f"messages have about {used}. Shorten them.", param="messages", code="context_length_exceeded")
            text = facts_block(grounding) + "\n\n" + template_answer(last_user_text(messages), grounding)
            return await _primed(self.model.stream([{"role": "assistant", "content": text}], params)), grounding
        convo = grounded_messages(grounding, messages)
        used = sum(approx_tokens(m["content"]) for m in convo)
        if used > self.model.context_length:  # the engine would refuse it after the facts went out
            raise ChatError(
                400, f"This model's maximum context length is {self.model.context_length} tokens; the messages "
                f"with the fleet's facts have about {used}. Shorten them.", param="messages",
                code="context_length_exceeded")
        # Not primed: the facts go out as soon as they are gathered, while the engine reads the prompt.
        return _checked(self.model.stream(convo, params), grounding), grounding


def _plain(m: Mapping[str, Any]) -> dict[str, str]:
    content = m.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return {"role": str(m["role"]), "content": content or ""}


async def _checked(deltas: AsyncIterator[Delta], grounding: Grounding) -> AsyncIterator[Delta]:
    """The facts first (before the model has read its prompt: they answer the question by themselves), then the
    model's words once all are in and checked (or why they were withheld, or why there are none: a model that
    fails after the facts went out is said in the text), then the sources."""
    yield Delta(facts_block(grounding))
    words: list[str] = []
    finish, usage = "stop", None
    try:
        async for d in deltas:
            words.append(d.text)
            finish, usage = d.finish_reason or finish, d.usage or usage
    except ChatError as exc:
        log.warning("the model failed after the facts: %s", exc.message)
        yield Delta(f"\n\n{NO_WORDS.format(why=exc.message)}" + sources_line(grounding), finish_reason="stop")
        return
    part, why = model_part("".join(words), grounding.known, SYSTEM_PROMPT, facts_block(grounding))
    if why:
        log.warning("model text withheld: %s", "; ".join(why))
    yield Delta(part + sources_line(grounding), finish_reason=finish, usage=usage)


async def _primed(it: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """Pull the first piece now, so a bad request fails before the HTTP status is sent."""
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[Delta]:
        if first is not None:
            yield first
        async for d in it:
            yield d

    return rest()


def _citations(grounding: Grounding | None) -> list[dict[str, Any]] | None:
    if grounding is None:
        return None
    return [c.model_dump(exclude={"tag"}) | {"tag": c.tag} for c in grounding.citations]


def build_chat_router(service: ChatService) -> APIRouter:
    """The ``/v1`` routes over a :class:`ChatService`."""
    router = APIRouter(prefix="/v1", tags=["chat"])

    @router.get("/models", response_model=None)
    async def models() -> Any:
        """The models this endpoint answers as."""
        try:
            return await service.models()
        except ChatError as exc:
            return error_response(exc)

    @router.post("/chat/completions", response_model=None, openapi_extra=_CHAT_OPENAPI)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        """OpenAI chat completions; ``model: opsloop`` is grounded in the fleet and the runbooks."""
        try:
            req = await parse_request(request)
            deltas, grounding = await service.answer(req)
        except ChatError as exc:
            return error_response(exc)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        citations = _citations(grounding)
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse(deltas, cid, created, req.model, citations, include_usage), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            text, finish, usage = [], "stop", None
            async for d in deltas:
                text.append(d.text)
                finish = d.finish_reason or finish
                usage = d.usage or usage
        except ChatError as exc:
            return error_response(exc)
        body: dict[str, Any] = {
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        if citations is not None:
            body["citations"] = citations
            body["choices"][0]["citations"] = citations
        return JSONResponse(body)

    return router


async def _sse(
    deltas: AsyncIterator[Delta], cid: str, created: int, model: str, citations: list[dict] | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body)}\n\n".encode()

    cite = {"citations": citations} if citations is not None else {}
    yield chunk({"role": "assistant", "content": ""}, None, **cite)
    usage = None
    try:
        async for d in deltas:
            usage = d.usage or usage
            if d.text or d.finish_reason:
                yield chunk({"content": d.text} if d.text else {}, d.finish_reason, **(cite if d.finish_reason else {}))
    except ChatError as exc:  # after the status went out: the error travels as an event
        yield f"data: {json.dumps(exc.body())}\n\n".encode()
    if include_usage:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
        yield f"data: {json.dumps(body)}\n\n".encode()
    yield b"data: [DONE]\n\n"
