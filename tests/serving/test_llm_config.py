"""The LLM settings, their rendering into ray.serve.llm, and ``opsloop config show`` / ``opsloop llm render``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.cli import main
from cluster.llm_spec import llm_spec
from cluster.settings import Settings
from serving.llm_config import (
    LLMSpec,
    engine_kwargs,
    llm_config_dict,
    placement_group_config,
    render,
    supported_engine_args,
)
from tests.requirements_check import require

KNOBS = ("model", "accelerator", "tensor_parallel_size", "pipeline_parallel_size", "llm_replicas", "llm_max_replicas",
         "block_size", "gpu_memory_utilization", "kv_cache_memory_bytes", "swap_space", "preemption_mode",
         "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching", "llm", "openai_base_url")


def test_config_show_explains_every_engine_knob(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for knob in KNOBS:
        assert knob in rows and len(rows[knob]["description"]) > 20, knob


def test_gpu_setting_packs_two_gpus_per_replica() -> None:
    s = Settings(accelerator="H100", tensor_parallel_size=2, llm_replicas=2)
    cfg = llm_config_dict(llm_spec(s), "/models/m", "m")
    assert cfg["placement_group_config"] == {"bundles": [{"CPU": 1, "GPU": 1}] * 2, "strategy": "STRICT_PACK"}
    assert cfg["accelerator_type"] == "H100" and cfg["engine_kwargs"]["tensor_parallel_size"] == 2
    auto = cfg["deployment_config"]["autoscaling_config"]
    assert auto["min_replicas"] == auto["initial_replicas"] == auto["max_replicas"] == 2
    assert "kv_cache_memory_bytes" not in cfg["engine_kwargs"]  # GPUs size the cache by utilization
    assert cfg["engine_kwargs"]["gpu_memory_utilization"] == 0.9


def test_cpu_setting_bounds_the_kv_cache_and_reserves_no_whole_cpu_for_the_replica() -> None:
    cfg = llm_config_dict(llm_spec(Settings(llm_max_replicas=3)), "/models/m", "m")
    assert cfg["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cfg
    assert cfg["engine_kwargs"]["kv_cache_memory_bytes"] == 160 * 1024**2  # a whole 4096-token context fits
    assert cfg["runtime_env"]["env_vars"]["MALLOC_MMAP_THRESHOLD_"] == "131072"  # freed buffers go back to the OS
    assert cfg["engine_kwargs"]["enforce_eager"] is True
    assert cfg["deployment_config"]["ray_actor_options"]["num_cpus"] == 0
    assert cfg["deployment_config"]["autoscaling_config"]["max_replicas"] == 3
    assert cfg["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_engine_knobs_map_onto_vllm_arguments_and_unknown_ones_are_reported() -> None:
    s = Settings(block_size=32, max_num_batched_tokens=1024, enable_prefix_caching=False, preemption_mode="swap",
                 swap_space=4)
    supported = {"block_size", "max_num_batched_tokens", "enable_prefix_caching"}
    kw, dropped = engine_kwargs(llm_spec(s), supported=supported)
    assert kw == {"block_size": 32, "max_num_batched_tokens": 1024, "enable_prefix_caching": False}
    assert set(dropped) >= {"preemption_mode", "swap_space", "max_num_seqs"}
    assert placement_group_config(llm_spec(Settings(pipeline_parallel_size=3)))["bundles"] == [{"CPU": 1}] * 3


def test_cluster_builds_the_spec_serving_takes_from_every_llm_setting() -> None:
    s = Settings(accelerator="L4", tensor_parallel_size=2, pipeline_parallel_size=3, llm_replicas=2, llm_max_replicas=5,
                 max_model_len=1024, llm_dtype="float16", gpu_memory_utilization=0.5, max_num_seqs=4,
                 enable_prefix_caching=False, swap_space=2, preemption_mode="swap", block_size=16,
                 kv_cache_memory_bytes=2**30, max_num_batched_tokens=2048)
    spec = llm_spec(s)
    assert spec.model_dump() == {
        "accelerator": "L4", "tensor_parallel_size": 2, "pipeline_parallel_size": 3, "replicas": 2, "max_replicas": 5,
        "max_model_len": 1024, "dtype": "float16", "gpu_memory_utilization": 0.5, "max_num_seqs": 4,
        "enable_prefix_caching": False, "swap_space": 2.0, "preemption_mode": "swap", "block_size": 16,
        "kv_cache_memory_bytes": 2**30, "max_num_batched_tokens": 2048,
    }
    with pytest.raises(ValidationError):
        LLMSpec(**spec.model_dump(), model="m")  # a typo or a stray setting is an error, not ignored
    with pytest.raises(ValidationError):
        spec.replicas = 3  # type: ignore[misc]  # frozen: the deployment's spec does not drift


def test_rendered_serve_options_ask_for_a_strict_pack_of_two_gpus_per_replica() -> None:
    require("vllm")
    out = render(llm_spec(Settings(accelerator="H100", tensor_parallel_size=2, llm_replicas=2)), "/models/m", "m")
    so = out["serve_options"]
    assert so["placement_group_strategy"] == "STRICT_PACK"
    assert [b["GPU"] for b in so["placement_group_bundles"]] == [1, 1]
    assert all(b.get("accelerator_type:H100") for b in so["placement_group_bundles"])
    assert so["autoscaling_config"]["min_replicas"] == 2
    names = supported_engine_args() or set()
    assert set(out["llm_config"]["engine_kwargs"]) <= names


def test_llm_render_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    require("vllm")
    import ray

    assert main(["llm", "render", "--accelerator", "H100", "--tensor-parallel-size", "2", "--replicas", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["llm_config"]["placement_group_config"]["strategy"] == "STRICT_PACK"
    assert out["serve_options"]["placement_group_strategy"] == "STRICT_PACK"
    assert not ray.is_initialized()  # rendering starts nothing


def test_model_choice_folder_id_and_bundled_gguf(tmp_path: Path) -> None:
    from cluster.model_files import ModelUnavailable, bundled_gguf, ensure_model

    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ModelUnavailable):
        ensure_model(Settings(data_dir=tmp_path, model=str(folder)))  # no config.json: not a model folder
    (folder / "config.json").write_text("{}")
    assert ensure_model(Settings(data_dir=tmp_path, model=str(folder))) == (str(folder.resolve()), "my-model")
    assert ensure_model(Settings(data_dir=tmp_path, model="org/some-model")) == ("org/some-model", "org/some-model")
    require("smollm2")
    gguf = bundled_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


def test_the_engine_starts_without_rays_usage_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OpsloopLLMServer._start_engine`` overrides ray.serve.llm's (which must exist: a renamed one would make the
    override dead code) and starts the engine without the report that starts a TelemetryAgent actor."""
    import asyncio

    from ray.llm._internal.serve.core.server import llm_server as ray_llm_server

    from serving.llm_server import OpsloopLLMServer

    assert issubclass(OpsloopLLMServer, ray_llm_server.LLMServer)
    assert "_start_engine" in vars(ray_llm_server.LLMServer) and "_start_engine" in vars(OpsloopLLMServer)
    reports: list[object] = []
    monkeypatch.setattr(ray_llm_server, "push_telemetry_report_for_all_models", lambda **kw: reports.append(kw))

    class Engine:
        started = False

        async def start(self) -> None:
            self.started = True

    server = object.__new__(OpsloopLLMServer)
    server.engine = Engine()
    asyncio.run(server._start_engine())
    assert server.engine.started and reports == []
    base = object.__new__(OpsloopLLMServer)
    base.engine, base._llm_config = Engine(), None
    asyncio.run(ray_llm_server.LLMServer._start_engine(base))  # Ray's own does report: what the override leaves out
    assert base.engine.started and reports == [{"all_models": [None]}]
