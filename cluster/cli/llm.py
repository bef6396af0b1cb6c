"""``opsloop llm render``: the ``ray.serve.llm`` config opsloop would deploy for the given settings."""

from __future__ import annotations

import argparse
import json

from cluster.cli._flags import add_settings_flags, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="the LLM deployment (vLLM on Ray Serve)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    r = verbs.add_parser(
        "render", help="print the ray.serve.llm LLMConfig and the placement group Serve would reserve",
        description="Render, without starting anything, the ray.serve.llm config of the LLM deployment: engine "
        "arguments, autoscaling bounds and, with vLLM installed, the per-replica placement group.",
    )
    add_settings_flags(
        r,
        model="model folder or id (default: the bundled SmolLM2, converted on `up`)",
        accelerator="cpu or a GPU type (H100, A100, L4 ...)",
        tensor_parallel_size=None,  # None: the setting's own description
        pipeline_parallel_size=None,
        llm_replicas=None,
        llm_max_replicas=None,
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from cluster.llm_spec import llm_spec
    from cluster.model_files import DEFAULT_MODEL_ID, default_model_dir
    from serving.llm_config import render

    s = settings_from_args(args)
    source, model_id = (s.model, s.model) if s.model else (str(default_model_dir(s)), DEFAULT_MODEL_ID)
    out = render(llm_spec(s), source, model_id)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    cfg = out["llm_config"]
    print(f"model          {model_id}  ({source})")
    print(f"accelerator    {s.accelerator}   tp={s.tensor_parallel_size} pp={s.pipeline_parallel_size}")
    auto = cfg["deployment_config"]["autoscaling_config"]
    print(f"replicas       min {auto['min_replicas']}  initial {auto['initial_replicas']}  max {auto['max_replicas']}")
    print("engine_kwargs  " + json.dumps(cfg["engine_kwargs"]))
    for name, why in out.get("not_passed", {}).items():
        print(f"not passed     {name}: {why}")
    pg = cfg["placement_group_config"]
    print(f"placement      {pg['strategy']} {json.dumps(pg['bundles'])}")
    if "serve_options" in out:
        so = out["serve_options"]
        bundles = json.dumps(so["placement_group_bundles"])
        print(f"serve reserves {so['placement_group_strategy']} {bundles} per replica")
    print("\nfull config (--json for machine-readable):")
    print(json.dumps(cfg, indent=2))
    return 0
