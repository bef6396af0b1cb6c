"""From an :class:`LLMSpec` to a ``ray.serve.llm`` ``LLMConfig``: pure dict building, shown by ``opsloop llm render``.

The spec is plain data that ``cluster/`` builds from its settings (``cluster.llm_spec.llm_spec``); this layer
never reads the settings itself. The engine knobs map one to one onto vLLM engine arguments. A GPU accelerator
asks for one bundle per tensor x pipeline rank, each with one GPU, packed strictly onto one node
(``STRICT_PACK``) so tensor parallel ranks talk over NVLink, not the network. On CPU the engine runs eagerly in
the replica.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: Engine arguments that only some vLLM versions accept (v1 engines recompute; swapping was removed).
VERSION_DEPENDENT = ("swap_space", "preemption_mode")
#: Serve's default is one whole CPU per replica; on a 2-core machine that starves the cluster (DESIGN).
REPLICA_NUM_CPUS = 0
#: Logical CPUs per engine bundle on CPU: the placement group must leave room for the rest of opsloop.
CPU_BUNDLE_CPUS = 1
GPU_BUNDLE_CPUS = 1
#: KV cache on CPU when not set: ~7.3k tokens of SmolLM2-135M (22.5 KiB per token), a whole 4096-token context with
#: room to spare. Measured with the agent and eight grounded chats at once: at most 0.73 of it in use, short of the
#: twin's kv_cache_pressure line (0.95); 128 MiB reached 0.89. More only costs memory (it is allocated up front).
CPU_KV_CACHE_BYTES = 160 * 1024**2
#: glibc's ``M_MMAP_THRESHOLD`` for the CPU engine's processes: every allocation from 128 KiB up (weights being
#: repacked, prefill activations) gets its own mapping and goes back to the OS when freed. By default glibc raises
#: the threshold as large blocks are freed, so later ones come from the heap, which never shrinks below a live
#: block: measured with SmolLM2, +100 MiB kept after loading and +250 MiB after eight 2k-token prompts.
CPU_MALLOC_MMAP_THRESHOLD = 128 * 1024


class LLMSpec(BaseModel):
    """What the LLM deployment is built from: accelerator, parallelism, replica bounds and engine knobs.

    The meaning of each field is that of the setting of the same name in ``cluster/settings.py`` (``dtype`` is
    ``llm_dtype``, ``replicas`` and ``max_replicas`` are ``llm_replicas`` and ``llm_max_replicas``), where the
    values are validated; ``None`` leaves the engine's default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    accelerator: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    replicas: int
    max_replicas: int | None
    max_model_len: int
    dtype: str
    gpu_memory_utilization: float
    max_num_seqs: int
    enable_prefix_caching: bool
    swap_space: float
    preemption_mode: Literal["recompute", "swap"]
    block_size: int | None
    kv_cache_memory_bytes: int | None
    max_num_batched_tokens: int | None


def is_cpu(spec: LLMSpec) -> bool:
    """Whether the LLM runs on CPU."""
    return spec.accelerator.lower() == "cpu"


def supported_engine_args() -> set[str] | None:
    """Names ``vllm.AsyncEngineArgs`` accepts here, or ``None`` when vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    return {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def engine_kwargs(spec: LLMSpec, supported: set[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The vLLM engine arguments from the spec, and the ones left out with why.

    Args:
        spec: the LLM deployment's spec.
        supported: argument names the installed vLLM accepts (``None``: keep all).
    """
    kw: dict[str, Any] = {
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
        "max_model_len": spec.max_model_len,
        "dtype": spec.dtype,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "max_num_seqs": spec.max_num_seqs,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "swap_space": spec.swap_space,
        "preemption_mode": spec.preemption_mode,
        "disable_log_stats": False,  # the engine metrics opsloop watches
        "trust_remote_code": False,
        # The agent's answers are decoded under a JSON schema. llguidance handles every schema keyword the agent
        # uses (prefixItems); without free whitespace a small model cannot pad an answer out to max_tokens.
        "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
    }
    if spec.block_size is not None:
        kw["block_size"] = spec.block_size
    if spec.kv_cache_memory_bytes is not None:
        kw["kv_cache_memory_bytes"] = spec.kv_cache_memory_bytes
    elif is_cpu(spec):
        kw["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if spec.max_num_batched_tokens is not None:
        kw["max_num_batched_tokens"] = spec.max_num_batched_tokens
    if is_cpu(spec):
        kw["enforce_eager"] = True  # torch.compile on 2 cores costs minutes of start-up
    dropped: dict[str, str] = {}
    if supported is not None:
        for name in [k for k in kw if k not in supported]:
            dropped[name] = f"this vLLM has no {name} argument (value {kw.pop(name)!r} not passed)"
    return kw, dropped


def placement_group_config(spec: LLMSpec) -> dict[str, Any]:
    """One bundle per rank (tensor x pipeline), strictly packed onto one node."""
    ranks = spec.tensor_parallel_size * spec.pipeline_parallel_size
    bundle = {"CPU": CPU_BUNDLE_CPUS} if is_cpu(spec) else {"CPU": GPU_BUNDLE_CPUS, "GPU": 1}
    return {"bundles": [dict(bundle) for _ in range(ranks)], "strategy": "STRICT_PACK"}


def llm_config_dict(
    spec: LLMSpec, model_source: str, model_id: str, supported: set[str] | None = None
) -> dict[str, Any]:
    """The ``ray.serve.llm.LLMConfig`` for the spec, as a plain dict (validated by :func:`build_llm_config`).

    Args:
        spec: the LLM deployment's spec.
        model_source: the model folder (or a locally cached id).
        model_id: the name the model is served as.
        supported: vLLM argument names accepted here (``None``: keep all).
    """
    kw, _dropped = engine_kwargs(spec, supported)
    hi = max(spec.max_replicas or spec.replicas, spec.replicas)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if is_cpu(spec):
        # The cluster runs everything else with one OpenMP thread; the engine gets the cores.
        env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        env["MALLOC_MMAP_THRESHOLD_"] = str(CPU_MALLOC_MMAP_THRESHOLD)  # read by glibc when the process starts
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": model_id, "model_source": model_source},
        "llm_engine": "vLLM",
        "engine_kwargs": kw,
        "placement_group_config": placement_group_config(spec),
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": spec.replicas, "initial_replicas": spec.replicas, "max_replicas": hi,
                "target_ongoing_requests": max(1, spec.max_num_seqs // 2),
            },
            "max_ongoing_requests": spec.max_num_seqs * 2,
            "ray_actor_options": {"num_cpus": REPLICA_NUM_CPUS},
        },
        "runtime_env": {"env_vars": env},
        "log_engine_metrics": False,
    }
    if is_cpu(spec):
        cfg["accelerator_config"] = {"kind": "cpu"}
    else:
        cfg["accelerator_type"] = spec.accelerator
    return cfg


def build_llm_config(cfg: dict[str, Any]) -> Any:
    """Validate a config dict into ``ray.serve.llm.LLMConfig``."""
    from ray.serve.llm import LLMConfig

    return LLMConfig(**cfg)


def render(spec: LLMSpec, model_source: str, model_id: str) -> dict[str, Any]:
    """What ``opsloop llm render`` prints: the LLMConfig and, when vLLM is installed, the Serve options it implies.

    The Serve options (``placement_group_bundles``, ``placement_group_strategy``) are what Ray schedules.
    """
    supported = supported_engine_args()
    cfg = llm_config_dict(spec, model_source, model_id, supported)
    _kw, dropped = engine_kwargs(spec, supported)
    build_llm_config(cfg)  # validated by ray.serve.llm itself
    out: dict[str, Any] = {"llm_config": cfg}
    if dropped:
        out["not_passed"] = dropped
    if supported is not None:
        out["serve_options"] = serve_placement(build_llm_config(cfg))
        out["serve_options"]["autoscaling_config"] = cfg["deployment_config"]["autoscaling_config"]
    return out


def serve_placement(llm_config: Any) -> dict[str, Any]:
    """The placement group Serve will reserve per replica (engine bundles with the replica actor merged in).

    The same computation as ``LLMServer.get_deployment_options`` without its runtime-env lookup, which would
    start a local Ray just to print a config.
    """
    from ray.llm._internal.serve.core.server.llm_server import _merge_replica_actor_and_child_actor_bundles

    engine = llm_config.get_engine_config()
    actor = llm_config.deployment_config.get("ray_actor_options", {})
    replica = {"CPU": actor.get("num_cpus", 1), "GPU": actor.get("num_gpus", 0), **actor.get("resources", {})}
    bundles = _merge_replica_actor_and_child_actor_bundles(engine.placement_bundles, replica)
    return {"placement_group_bundles": bundles, "placement_group_strategy": engine.placement_strategy}
