"""Serve application builders named by the rendered Serve config (``serve deploy``, KubeRay ``serveConfigV2``).

Each builder takes the ``args`` of its application in the config and returns a bound Serve application.
"""

from __future__ import annotations

from typing import Any

from cluster.settings import load_settings

LOOP = ("twin", "gateway", "agent")


def _loop_handles(settings: Any) -> dict[str, Any]:
    """The named loop actors of ``settings.namespace``; started (detached, running) when absent."""
    import ray

    try:
        return {name: ray.get_actor(name, namespace=settings.namespace) for name in LOOP}
    except ValueError:
        from cluster.deploy import start_loop

        if not settings.redis_url:
            raise RuntimeError("a cluster deployment needs OPSLOOP_REDIS_URL (opsloop's Redis)") from None
        handles = start_loop(settings, settings.redis_url, progress=lambda _line: None, detached=True)
        for name in LOOP:
            handles[name].run.remote()
        return handles


def ingress_app(args: dict[str, Any]) -> Any:
    """The opsloop HTTP ingress bound to the loop actors (found by name, or started detached)."""
    from ray import serve

    from cluster.deploy import INGRESS_MAX_ONGOING, build_knowledge, ingress_options
    from serving.ingress import Ingress
    from serving.llm import ChatSpec

    settings = load_settings(**args)
    h = _loop_handles(settings)
    spec = ChatSpec("none", None, settings.max_model_len, max_tokens=settings.llm_max_tokens)
    deployment = serve.deployment(serve.ingress()(Ingress), name="ingress", ray_actor_options={"num_cpus": 0},
                                  max_ongoing_requests=INGRESS_MAX_ONGOING)
    return deployment.bind(h["gateway"], h["twin"], h["agent"], chat=spec, knowledge=build_knowledge(settings),
                           **ingress_options(settings, settings.redis_url or ""))


def llm_app(args: dict[str, Any]) -> Any:
    """The vLLM deployment (``ray.serve.llm``) from the rendered ``LLMConfig``; unsupported engine args dropped."""
    from ray.serve.llm import build_llm_deployment

    from cluster.deploy import LLM_PREFIX
    from serving.llm_config import build_llm_config, supported_engine_args
    from serving.llm_server import OpsloopLLMServer

    cfg = dict(args["llm_config"])
    supported = supported_engine_args()
    if supported is not None:
        cfg["engine_kwargs"] = {k: v for k, v in cfg["engine_kwargs"].items() if k in supported}
    return build_llm_deployment(build_llm_config(cfg), name_prefix=LLM_PREFIX, deployment_cls=OpsloopLLMServer)
