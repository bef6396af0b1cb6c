"""Command-line flags that set fields of the one settings model (:class:`cluster.settings.Settings`).

A command names the settings it takes as flags, ``add_settings_flags(parser, accelerator="...", llm_replicas=None)``
(its own help text, or ``None`` for the field's description), and builds its settings from the parsed flags with
``settings_from_args(args)``, without listing the flags a second time. Each flag's ``dest`` is the field's name; its
option string and any metavar or action come from ``FLAGS`` below, its ``type`` (``int``, ``float``) and
``choices`` (a ``Literal``) from the field itself, so the flag and the setting cannot disagree.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from cluster.cli import CliError
from cluster.settings import Settings, load_settings

#: Settings field -> its flag's option string and extra ``add_argument`` keywords (metavar, action ...); a ``help``
#: here is the flag's short help where a command gives none (else the field's description).
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    # where things live, Ray and HTTP
    "port": ("--port", {}),
    "host": ("--host", {}),
    "data_dir": ("--data-dir", {}),
    "config": ("--config", {}),
    "ray_address": ("--address", {}),
    "redis_url": ("--redis-url", {}),
    "redis_appendfsync": ("--redis-appendfsync", {}),
    # the fleet's telemetry and the simulator (cluster/fleet_settings.py)
    "sim_nodes": ("--nodes", {}),
    "sim_gpus_per_node": ("--gpus-per-node", {}),
    "sim_speed": ("--speed", {}),
    "telemetry": ("--telemetry", {}),
    "dcgm_urls": ("--dcgm-url", {"action": "append", "metavar": "URL"}),
    "prometheus_url": ("--prometheus-url", {"metavar": "URL"}),
    "replay_file": ("--replay", {"metavar": "FILE"}),
    "redfish_urls": ("--redfish-url", {"action": "append", "metavar": "[NAME=]URL"}),
    "scrape_interval_s": ("--scrape-interval", {"metavar": "SECONDS"}),
    "facility": ("--facility", {}),
    "modbus_endpoint": ("--modbus-endpoint", {"metavar": "HOST:PORT"}),
    "modbus_map": ("--modbus-map", {"metavar": "FILE"}),
    "demo_fault": ("--demo-fault", {"action": argparse.BooleanOptionalAction, "default": None}),
    # actions
    "actuator": ("--actuator", {}),
    "scheduler": ("--scheduler", {"help": "who drains nodes and moves jobs, once for the cluster: none (default: "
                                  "the actuator), slurm (scontrol; --slurm-conf) or kubernetes (cordon, taint and "
                                  "evict through the API server; --kubeconfig); cordon_gpu is refused by both"}),
    "slurm_conf": ("--slurm-conf", {"metavar": "FILE", "help": "slurm.conf the Slurm commands read (SLURM_CONF)"}),
    "k8s_kubeconfig": ("--kubeconfig", {"metavar": "FILE", "help": "kubeconfig of the Kubernetes scheduler (default: "
                                        "in-cluster, else KUBECONFIG or ~/.kube/config)"}),
    "tickets": ("--tickets", {"help": "where open_ticket opens tickets: none (default: the actuator), jira or "
                              "servicenow (jira_* / servicenow_* settings; pip install 'opsloop[tickets]')"}),
    "paging": ("--paging", {"help": "where notify pages the on-call: none (default: the actuator) or pagerduty "
                            "(pagerduty_routing_key; pip install 'opsloop[paging]')"}),
    # the LLM
    "llm": ("--llm", {}),
    "model": ("--model", {}),
    "openai_base_url": ("--openai-base-url", {}),
    "accelerator": ("--accelerator", {}),
    "tensor_parallel_size": ("--tensor-parallel-size", {}),
    "pipeline_parallel_size": ("--pipeline-parallel-size", {}),
    "llm_replicas": ("--replicas", {}),
    "llm_max_replicas": ("--max-replicas", {}),
    # the rendered deployment (cluster/deploy_settings.py)
    "gpu_nodes": ("--gpu-nodes", {}),
    "node_gpus": ("--node-gpus", {}),
    "deploy_image": ("--image", {}),
}

#: Where ``add_settings_flags`` records, in the parser's defaults, the fields its flags set.
_FIELDS_KEY = "settings_flags"


def add_settings_flags(parser: argparse.ArgumentParser, /, **helps: str | None) -> None:
    """Add a flag for each settings field named, in the order given; the value is the flag's help text (``None``:
    the ``help`` ``FLAGS`` gives, else the field's description). Repeated calls on one parser add to the fields
    ``settings_from_args`` reads.

    Raises:
        KeyError: a name is not a settings field with a flag in ``FLAGS`` (a mistake in the command, not input).
    """
    for name, help_text in helps.items():
        if name not in FLAGS or name not in Settings.model_fields:
            raise KeyError(f"no settings flag for {name!r}: add the field to cluster.cli._flags.FLAGS")
        option, extra = FLAGS[name]
        field = Settings.model_fields[name]
        kwargs: dict[str, Any] = {"dest": name, **_type_and_choices(field.annotation), **extra}
        if help_text is None:
            help_text = extra.get("help") or (field.description or "").replace("%", "%%")
        kwargs["help"] = help_text
        parser.add_argument(option, **kwargs)
    parser.set_defaults(**{_FIELDS_KEY: (*(parser.get_default(_FIELDS_KEY) or ()), *helps)})


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the flags ``add_settings_flags`` declared (a flag not given is ``None``: env, the YAML file or
    the default decides).

    Raises:
        CliError: (exit code 2) the settings do not validate; the message names each field and what is wrong.
    """
    try:
        return load_settings(**{name: getattr(args, name, None) for name in getattr(args, _FIELDS_KEY, ())})
    except ValueError as exc:  # SettingsError (and pydantic's ValidationError) are ValueErrors
        raise CliError(str(exc), code=2) from None


def _type_and_choices(annotation: Any) -> dict[str, Any]:
    """``type=int``/``float`` for a numeric field, ``choices`` for a ``Literal`` one (``X | None`` alike)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation in (int, float):
        return {"type": annotation}
    return {}
