"""``opsloop llm render``: the ``ray.serve.llm`` config opsloop would deploy for the given settings."""

from __future__ import annotations

import argparse
import json

from cluster.cli import CliError
from cluster.settings import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="the LLM deployment (vLLM on Ray Serve)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    r = verbs.add_parser(
        "render", help="print the ray.serve.llm LLMConfig and the placement group Serve would reserve",
        description="Render, without starting anything, the ray.serve.llm config of the LLM deployment: engine "
        "arguments, autoscaling bounds and, with vLLM installed, the per-replica placement group.",
    )
    r.add_argument("--model", help="model folder or id (default: the bundled SmolLM2, converted on `up`)")
    r.add_argument("--accelerator", help="cpu or a GPU type (H100, A100, L4 ...)")
    r.add_argument("--tensor-parallel-size", type=int)
    r.add_argument("--pipeline-parallel-size", type=int)
    r.add_argument("--replicas", dest="llm_replicas", type=int)
    r.add_argument("--max-replicas", dest="llm_max_replicas", type=int)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cluster.llm_spec import llm_spec
    from cluster.models import DEFAULT_MODEL_ID, default_model_dir
    from serving.llm_config import render

    try:
        s = load_settings(
            model=args.model, accelerator=args.accelerator, tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size, llm_replicas=args.llm_replicas,
            llm_max_replicas=args.llm_max_replicas,
        )
    except ValidationError as exc:
        raise CliError(f"bad setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", code=2) from exc
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
