"""The vLLM deployment class: ``ray.serve.llm``'s ``LLMServer`` plus two plain-data methods for opsloop.

``chat_stream`` takes and yields plain data (a dict in, SSE strings or an error dict out), so the ingress never
imports vLLM; ``metrics_page`` returns the replica's engine metrics (Prometheus text) and names the replica, for
the twin's vLLM telemetry source (``cluster/telemetry/vllm.py``, which asks every replica at once).
No decorators: ``cluster/deploy.py`` builds the deployment with ``build_llm_deployment``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.serve.llm import LLMServer


def _uni_executor_for_one_cpu_rank() -> None:
    """Run a single-rank CPU engine's worker inside the engine-core process (vLLM's ``uni`` executor).

    ray.serve.llm always picks the ``mp`` executor on CPU, which adds a third process holding another copy of
    torch and the weights (~0.7 GiB for SmolLM2); with one rank there is nothing to distribute.
    """
    from ray.llm._internal.serve.engines.vllm import vllm_models

    cls = vllm_models.VLLMEngineConfig
    if getattr(cls, "_opsloop_uni", False):
        return
    original = cls.get_initialization_kwargs

    def get_initialization_kwargs(self: Any) -> dict:
        kw = original(self)
        one_rank = kw.get("tensor_parallel_size", 1) * kw.get("pipeline_parallel_size", 1) == 1
        if kw.get("distributed_executor_backend") == "mp" and one_rank:
            kw["distributed_executor_backend"] = "uni"
        return kw

    cls.get_initialization_kwargs = get_initialization_kwargs
    cls._opsloop_uni = True


def _supported_only(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop arguments this vLLM does not have (``swap_space``/``preemption_mode`` left v1)."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    names = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    return {k: v for k, v in engine_kwargs.items() if k in names}


_uni_executor_for_one_cpu_rank()


class OpsloopLLMServer(LLMServer):
    """An ``LLMServer`` whose chat can be called with plain dicts over a deployment handle."""

    async def __init__(self, llm_config: Any, *args: Any, **kwargs: Any) -> None:
        llm_config = llm_config.model_copy(update={"engine_kwargs": _supported_only(llm_config.engine_kwargs)})
        await super().__init__(llm_config, *args, **kwargs)

    async def _start_engine(self) -> None:
        """Start the engine without ray.serve.llm's usage report: that report is recorded by a detached
        ``TelemetryAgent`` actor, one more Ray worker process (~0.1 GiB) kept for the cluster's life, for usage
        statistics opsloop has no use for. Overrides ``LLMServer._start_engine`` (Ray 2.5x), which is the engine's
        start plus that report."""
        if self.engine is None:
            raise ValueError("Engine is not set")
        await self.engine.start()

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        """Run one chat request; yields ``data: {...}`` SSE strings, a response dict, or ``{"error": {...}}``."""
        from pydantic import ValidationError
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        try:
            request = ChatCompletionRequest(**body)
        except ValidationError as exc:
            yield {"error": {"message": str(exc.errors()[0].get("msg")), "type": "BadRequestError", "code": 400}}
            return
        async for item in await self.chat(request):
            for x in item if isinstance(item, list) else [item]:
                if isinstance(x, str):
                    yield x
                elif getattr(x, "error", None) is not None:
                    yield {"error": x.error.model_dump(mode="json")}
                else:
                    yield x.model_dump(mode="json")

    async def metrics_page(self) -> dict[str, str]:
        """This replica's engine metrics (``vllm:*``, Prometheus text) and which deployment and replica it is."""
        from prometheus_client import REGISTRY, generate_latest
        from ray import serve

        ctx = serve.get_replica_context()
        return {"deployment": ctx.deployment, "replica": ctx.replica_tag, "text": generate_latest(REGISTRY).decode()}
