"""The LLM deployment's spec from opsloop's settings: ``serving/`` takes the spec, only ``cluster/`` reads settings."""

from __future__ import annotations

from cluster.settings import Settings
from serving.llm_config import LLMSpec


def llm_spec(settings: Settings) -> LLMSpec:
    """The LLM block of the settings as a :class:`serving.llm_config.LLMSpec`."""
    return LLMSpec(
        accelerator=settings.accelerator,
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        replicas=settings.llm_replicas,
        max_replicas=settings.llm_max_replicas,
        max_model_len=settings.max_model_len,
        dtype=settings.llm_dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_num_seqs=settings.max_num_seqs,
        enable_prefix_caching=settings.enable_prefix_caching,
        swap_space=settings.swap_space,
        preemption_mode=settings.preemption_mode,
        block_size=settings.block_size,
        kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )
