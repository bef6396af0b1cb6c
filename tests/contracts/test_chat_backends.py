"""The ``ChatModel`` contract (``serving/chat_model.py``), one suite run against every backend that runs without
a model download: ``none`` (no model) and ``external`` (an OpenAI-compatible server; here the stand-in of
``tests/serving/test_chat_endpoint.py``, since the server is a boundary we do not own).

What the chat endpoint relies on, whichever backend answers:
- ``start()`` is idempotent; ``name`` is the model's id (None without a model), ``context_length`` positive;
- ``stream`` yields ``Delta`` pieces whose last, and only the last, carries ``finish_reason`` and the usage;
- a backend that does not answer is a ``ChatError`` (status 502), which the endpoint turns into an OpenAI error.

``vllm`` (``ServeLLMModel``) needs the engine deployed on Ray Serve: ``tests/serving/test_llm_serve.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from serving.chat_model import ChatError, Delta, GenParams
from serving.llm import CHAT_MODELS, ChatSpec, NoModel, OpenAIModel, make_chat_model
from tests.helpers import free_port
from tests.serving.test_chat_endpoint import fake_openai_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
MESSAGES = [{"role": "user", "content": "The coolant flow to n01 dropped. What first?"}]

Build = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class Impl:
    """One backend: its class, a build that answers, and builds whose server does not answer."""

    cls: type
    build: Build
    dead: tuple[Build, ...] = ()


@asynccontextmanager
async def none() -> AsyncIterator[Any]:
    yield make_chat_model(ChatSpec("none", context_length=512))


@asynccontextmanager
async def external() -> AsyncIterator[Any]:
    model = OpenAIModel("http://fake/v1", transport=httpx.ASGITransport(app=fake_openai_server()))
    try:
        yield model
    finally:
        await model.aclose()


def external_dead(model_id: str | None) -> Build:
    """The external backend over a port nothing listens on (its model named in settings, or asked for)."""

    @asynccontextmanager
    async def build() -> AsyncIterator[Any]:
        model = make_chat_model(ChatSpec("external", model_id=model_id, base_url=f"http://127.0.0.1:{free_port()}/v1"))
        try:
            yield model
        finally:
            await model.aclose()

    return build


IMPLS: dict[str, Impl] = {
    "none": Impl(NoModel, none),
    "external": Impl(OpenAIModel, external, (external_dead(None), external_dead("tiny"))),
}
DEAD = [
    pytest.param("external", 0, id="external-model-asked-for"),
    pytest.param("external", 1, id="external-model-named"),
]


@pytest.mark.parametrize("name", list(IMPLS))
async def test_start_is_idempotent_and_names_the_model(name: str) -> None:
    async with IMPLS[name].build() as model:
        await model.start()
        await model.start()
        assert model.name is None or (isinstance(model.name, str) and model.name)
        assert isinstance(model.context_length, int) and model.context_length > 0


@pytest.mark.parametrize("name", list(IMPLS))
async def test_the_stream_ends_with_its_finish_reason_and_usage(name: str) -> None:
    async with IMPLS[name].build() as model:
        await model.start()
        deltas = [d async for d in model.stream(MESSAGES, GenParams(max_tokens=32))]
    assert deltas and all(isinstance(d, Delta) for d in deltas)
    assert "".join(d.text for d in deltas).strip(), "an answer"
    *pieces, last = deltas
    assert last.finish_reason and not any(d.finish_reason for d in pieces)
    assert last.usage is not None
    assert all(isinstance(last.usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


@pytest.mark.parametrize(("name", "k"), DEAD)
async def test_a_backend_that_does_not_answer_is_a_chat_error(name: str, k: int) -> None:
    async with IMPLS[name].dead[k]() as model:
        with pytest.raises(ChatError) as exc:
            async for _ in model.stream(MESSAGES, GenParams(max_tokens=8)):
                pass
    assert exc.value.status == 502 and exc.value.type == "server_error"


def test_every_backend_is_in_the_suite() -> None:
    assert all(inspect.isasyncgenfunction(i.cls.stream) for i in IMPLS.values())
    assert set(CHAT_MODELS) == {*IMPLS, "vllm"}
    for name, impl in IMPLS.items():  # the registry builds the class the suite tests
        assert isinstance(make_chat_model(ChatSpec(name, base_url="http://127.0.0.1:9/v1")), impl.cls)
