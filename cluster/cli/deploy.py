"""``opsloop deploy render``: write the deployment files for a Ray cluster (see docs/deploy.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cluster.cli import CliError
from cluster.cli._flags import add_settings_flags, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="deployment files for a Ray cluster (Serve, KubeRay, cluster launcher)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    r = verbs.add_parser(
        "render", help="write serve.yaml, rayservice.yaml and cluster.yaml rendered from the settings",
        description="Render, from the settings (env OPSLOOP_*, --config YAML, flags): serve.yaml (a `serve deploy` "
        "config), rayservice.yaml (a KubeRay RayService: head + GPU worker group, GCS fault tolerance on an "
        "external Redis) and cluster.yaml (a Ray cluster-launcher config for VMs, `ray up cluster.yaml`).",
    )
    r.add_argument("--out", required=True, type=Path, help="directory to write the files into (created)")
    add_settings_flags(
        r,
        config="settings YAML file (default: env OPSLOOP_CONFIG)",
        accelerator="GPU type per vLLM rank (H100, A100 ...) or cpu",
        tensor_parallel_size="GPUs one replica splits each layer across",
        llm_replicas="vLLM replicas at start",
        llm_max_replicas="upper bound of the replica autoscaler",
        gpu_nodes="GPU worker nodes at start",
        node_gpus="GPUs per GPU worker node",
        deploy_image="container image of the Ray nodes",
    )
    r.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cluster.render import render_all

    settings = settings_from_args(args)
    try:
        files = render_all(settings)
    except ValidationError as exc:
        raise CliError(f"bad setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", code=2) from exc
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    args.out.mkdir(parents=True, exist_ok=True)
    for name, doc in files.items():
        (args.out / name).write_text(yaml.safe_dump(doc, sort_keys=False))
        print(args.out / name)
    return 0
