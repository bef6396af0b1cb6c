"""The chat model backends behind :class:`serving.chat_model.ChatModel`, chosen by name from settings (``llm``).

- ``vllm``: the vLLM deployment on Ray Serve (``serving.llm_server.OpsloopLLMServer``) through its handle;
- ``external``: any OpenAI-compatible server, over HTTP (httpx);
- ``none``: no model; the ``opsloop`` model answers from a template (see :mod:`serving.grounding`).

All of them speak OpenAI's streaming format: server-sent events decoded by ``httpx-sse`` (:func:`sse_data`), each
payload parsed by :func:`parse_sse_payload`; engine errors become
:class:`serving.chat_model.ChatError` with the engine's status and message.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import SecretStr

from serving.chat_model import ChatError, Delta, GenParams, approx_tokens

#: Connect and read timeouts for an external server; a generation may take long, a silent server may not.
EXTERNAL_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=30.0)
TEMPLATE_CHUNK_WORDS = 6


@dataclass(frozen=True)
class ChatSpec:
    """What the ingress needs to build its chat model (picklable; the handle travels separately)."""

    backend: str = "none"
    model_id: str | None = None
    context_length: int = 2048
    base_url: str | None = None
    api_key: SecretStr | None = None  # masked in repr and logs; read only where the header is built
    max_tokens: int = 256
    #: The LLM deployment and its Serve app (``vllm``), looked up where the model is used.
    deployment: str | None = None
    app: str | None = None


def _body(model: str, messages: list[dict[str, str]], params: GenParams) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}
    for k in ("max_tokens", "temperature", "top_p", "stop", "seed", "ignore_eos"):
        v = getattr(params, k)
        if v is not None:
            body[k] = v
    if params.json_schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": params.json_schema, "strict": True}}
    return body


def error_from(payload: dict[str, Any], status: int | None = None) -> ChatError:
    """An engine's error (OpenAI or vLLM shape) as a :class:`ChatError`."""
    err = payload.get("error", payload)
    if isinstance(err, str):
        err = {"message": err}
    message = str(err.get("message") or "the model failed")
    code = err.get("code")
    if status is None:
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    out_code = code if isinstance(code, str) else None
    param = err.get("param")
    if re.search(r"context length|maximum context|too long|max_model_len", message, re.I):
        out_code, param, status, kind = "context_length_exceeded", param or "messages", 400, "invalid_request_error"
    if status >= 500:
        status = 502  # the model behind us failed, not the caller
    return ChatError(status, message, type=kind, param=param, code=out_code)


def parse_sse_payload(payload: str) -> Delta | None:
    """One ``data:`` payload of an OpenAI stream as a :class:`Delta` (``None`` for ``[DONE]`` or a role chunk)."""
    payload = payload.strip()
    if not payload or payload == "[DONE]":
        return None
    data = json.loads(payload)
    if "error" in data:
        raise error_from(data)
    usage = data.get("usage")
    usage = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage} \
        if usage else None
    choices = data.get("choices") or []
    if not choices:
        return Delta("", usage=usage) if usage else None
    ch = choices[0]
    text = (ch.get("delta") or {}).get("content") or (ch.get("message") or {}).get("content") or ""
    if not text and not ch.get("finish_reason") and not usage:
        return None
    return Delta(text, finish_reason=ch.get("finish_reason"), usage=usage)


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event in a stream of bytes (``httpx-sse`` decodes it, whatever the pieces'
    boundaries: an event split across two pieces, or several in one)."""
    resp = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=pieces)
    async for sse in EventSource(resp).aiter_sse():
        yield sse.data


async def _merge_usage(deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """OpenAI sends usage in a chunk after the finishing one; fold it into the last delta."""
    held: Delta | None = None
    async for d in deltas:
        if held is not None and not d.text and not d.finish_reason and d.usage:
            held.usage = d.usage
            continue
        if held is not None:
            yield held
        held = d
    if held is not None:
        yield held


class NoModel:
    """``llm=none``: no language model. Streams the text it is given (the ``opsloop`` template answer)."""

    name = None

    def __init__(self, context_length: int = 2048) -> None:
        self.context_length = context_length

    async def start(self) -> None:
        """Nothing to resolve."""

    async def stream(self, messages: list[dict[str, str]], params: GenParams) -> AsyncIterator[Delta]:
        """Stream the last message's content a few words at a time."""
        text = messages[-1]["content"] if messages else ""
        words = re.split(r"(?<=\s)", text)
        for i in range(0, len(words), TEMPLATE_CHUNK_WORDS):
            yield Delta("".join(words[i : i + TEMPLATE_CHUNK_WORDS]))
        n = approx_tokens(text)
        yield Delta("", finish_reason="stop", usage={"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n})


class OpenAIModel:
    """An external OpenAI-compatible server (vLLM's own server, llama.cpp, a hosted API …)."""

    def __init__(
        self, base_url: str, api_key: SecretStr | str | None = None, model: str | None = None,
        context_length: int = 2048, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=EXTERNAL_TIMEOUT,
                                        transport=transport)
        self._name = model
        self.context_length = context_length

    @property
    def name(self) -> str | None:
        return self._name

    async def start(self) -> None:
        """Ask the server for its model (and context length) when none was configured."""
        if self._name is not None:
            return
        try:
            listed = (await self.client.get("/models")).json().get("data") or []
        except (httpx.HTTPError, ValueError) as exc:
            raise ChatError(502, f"the external model server did not answer: {exc}", type="server_error") from exc
        if not listed:
            raise ChatError(502, "the external model server lists no model", type="server_error")
        self._name = str(listed[0]["id"])
        if isinstance(listed[0].get("max_model_len"), int):
            self.context_length = listed[0]["max_model_len"]

    async def stream(self, messages: list[dict[str, str]], params: GenParams) -> AsyncIterator[Delta]:
        """POST a streaming chat request and yield its pieces."""
        await self.start()
        body = _body(self._name or "", messages, params)
        try:
            async with self.client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    try:
                        payload = json.loads(raw)
                    except ValueError:
                        payload = {"message": raw.decode(errors="replace")[:500]}
                    raise error_from(payload if isinstance(payload, dict) else {"message": str(payload)},
                                     resp.status_code)
                pieces = self._pieces(resp)
                async for d in _merge_usage(pieces):
                    yield d
        except httpx.HTTPError as exc:  # a dead or broken server: an OpenAI-style 502, never a bare 500
            raise ChatError(502, f"the external model server did not answer: {exc}", type="server_error") from exc

    async def _pieces(self, resp: httpx.Response) -> AsyncIterator[Delta]:
        try:
            async for sse in EventSource(resp).aiter_sse():
                d = parse_sse_payload(sse.data)
                if d is not None:
                    yield d
        except SSEError as exc:  # 200 but not an event stream: a server that ignored "stream": true
            raise ChatError(502, f"the external model server did not stream: {exc}", type="server_error") from exc

    async def aclose(self) -> None:
        await self.client.aclose()


class ServeLLMModel:
    """The vLLM deployment on Ray Serve, called through its handle (``OpsloopLLMServer.chat_stream``)."""

    def __init__(
        self, handle: Any, model_id: str, context_length: int, deployment: str | None = None, app: str | None = None
    ) -> None:
        self.handle = handle
        self._name = model_id
        self.context_length = context_length
        self.deployment, self.app = deployment, app

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        """Look the deployment's handle up by name (it is deployed, and healthy, before the ingress)."""
        if self.handle is None:
            from ray import serve

            self.handle = serve.get_deployment_handle(self.deployment, app_name=self.app)

    async def stream(self, messages: list[dict[str, str]], params: GenParams) -> AsyncIterator[Delta]:
        """Stream one chat request through the deployment."""
        await self.start()
        body = _body(self._name, messages, params)
        if params.json_schema is not None:  # vLLM's own form: the same schema, and no free whitespace to pad with
            del body["response_format"]
            body["structured_outputs"] = {"json": params.json_schema, "disable_any_whitespace": True}
        gen = self.handle.options(stream=True).chat_stream.remote(body)
        async for d in _merge_usage(self._pieces(gen)):
            yield d

    async def _pieces(self, gen: Any) -> AsyncIterator[Delta]:
        async def stream() -> AsyncIterator[bytes]:  # the handle yields SSE text, or a dict (an error, or a chunk)
            async for item in gen:
                if isinstance(item, dict):
                    if "error" in item:
                        raise error_from(item)
                    item = f"data: {json.dumps(item)}\n\n"
                yield item.encode() if isinstance(item, str) else bytes(item)

        async for data in sse_data(stream()):
            d = parse_sse_payload(data)
            if d is not None:
                yield d


#: The registry: backend name → factory(spec, handle).
CHAT_MODELS: dict[str, Callable[[ChatSpec, Any], Any]] = {
    "none": lambda spec, _h: NoModel(spec.context_length),
    "external": lambda spec, _h: OpenAIModel(spec.base_url or "", spec.api_key, spec.model_id, spec.context_length),
    "vllm": lambda spec, h: ServeLLMModel(h, spec.model_id or "model", spec.context_length, spec.deployment, spec.app),
}


def make_chat_model(spec: ChatSpec, handle: Any = None) -> Any:
    """The backend named by ``spec.backend``."""
    if spec.backend == "vllm" and handle is None and not spec.deployment:
        raise ValueError("the vllm backend needs the LLM deployment's handle or name")
    if spec.backend == "external" and not spec.base_url:
        raise ValueError("the external backend needs openai_base_url")
    return CHAT_MODELS[spec.backend](spec, handle)
