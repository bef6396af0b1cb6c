"""Deployment files from settings: a Serve config, a KubeRay ``RayService`` and a Ray cluster-launcher YAML.

Pure: settings in, plain dicts out (``opsloop deploy render`` writes them; tests validate them against Serve's
``ServeDeploySchema``, the KubeRay CRD's OpenAPI schema and Ray's ``ray-schema.json``). See docs/deploy.md.
"""

from __future__ import annotations

from typing import Any

import yaml

from cluster.llm_spec import llm_spec
from cluster.settings import Settings
from serving.llm_config import is_cpu, llm_config_dict

RAY_VERSION = "2.60.0"
#: Import paths of the Serve application builders (``cluster/serve_app.py``).
INGRESS_IMPORT = "cluster.serve_app:ingress_app"
LLM_IMPORT = "cluster.serve_app:llm_app"
INGRESS_APP = "opsloop"
LLM_APP = "opsloop-llm"
INGRESS_MAX_ONGOING = 100
#: Settings never written into a rendered file: secrets, and paths that only mean something on this machine.
NOT_RENDERED = frozenset({
    "admin_token", "openai_api_key", "webhook_token", "slack_bot_token", "slack_signing_secret", "config", "data_dir",
})
#: Ports the head exposes: GCS, dashboard, Ray client, Serve HTTP.
GCS_PORT, DASHBOARD_PORT, CLIENT_PORT = 6379, 8265, 10001
DEFAULT_MODEL_SOURCE = "/models/smollm2-135m-instruct"


def app_args(settings: Settings) -> dict[str, Any]:
    """Settings the Serve app builders receive (the non-default, non-secret ones, JSON-ready)."""
    dumped = settings.model_dump(mode="json", exclude_defaults=True, exclude=set(NOT_RENDERED))
    cluster_only = ("deploy_", "launcher_", "head_", "node_", "gpu_nodes")
    return {k: v for k, v in dumped.items() if not k.startswith(cluster_only)}


def model_source(settings: Settings) -> tuple[str, str]:
    """``(model folder, served id)`` inside the cluster: ``settings.model`` or the conventional image path."""
    if settings.model:
        return settings.model, settings.model.rstrip("/").rsplit("/", 1)[-1]
    return DEFAULT_MODEL_SOURCE, "smollm2-135m-instruct"


def check_fits(settings: Settings) -> None:
    """A tensor x pipeline group is packed on one node (STRICT_PACK): it must fit one GPU node.

    Raises:
        ValueError: when one replica needs more GPUs than a node has.
    """
    ranks = settings.tensor_parallel_size * settings.pipeline_parallel_size
    if not is_cpu(llm_spec(settings)) and ranks > settings.node_gpus:
        raise ValueError(f"one LLM replica needs {ranks} GPUs packed on one node, a GPU node has {settings.node_gpus}")


def llm_application(settings: Settings) -> dict[str, Any]:
    """The vLLM app: its ``LLMConfig`` (placement group per replica, autoscaling bounds) as builder args."""
    source, model_id = model_source(settings)
    return {
        "name": LLM_APP, "route_prefix": None, "import_path": LLM_IMPORT,
        "args": {"llm_config": llm_config_dict(llm_spec(settings), source, model_id)},
    }


def ingress_application(settings: Settings) -> dict[str, Any]:
    """The opsloop app: the HTTP ingress; its builder finds or starts the loop actors."""
    return {
        "name": INGRESS_APP, "route_prefix": "/", "import_path": INGRESS_IMPORT, "args": app_args(settings),
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        "deployments": [{
            "name": "ingress", "max_ongoing_requests": INGRESS_MAX_ONGOING,
            # Serve's default of one CPU per replica starves small heads (DESIGN); the ingress mostly waits.
            "ray_actor_options": {"num_cpus": 0},
        }],
    }


def serve_config(settings: Settings) -> dict[str, Any]:
    """A ``serve deploy``-able config (``ray.serve.schema.ServeDeploySchema``)."""
    check_fits(settings)
    apps = [ingress_application(settings)]
    if settings.llm == "vllm":
        apps.insert(0, llm_application(settings))
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": settings.port},
        "applications": apps,
    }


def _app_redis_url(settings: Settings) -> str:
    # opsloop's own data (event log, approvals) in database 1 of the GCS Redis unless a Redis is given.
    return settings.redis_url or f"redis://{settings.gcs_redis_address}/1"


def _container(name: str, settings: Settings, cpus: int, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    env = [{"name": "OPSLOOP_REDIS_URL", "value": _app_redis_url(settings)},
           {"name": "OPSLOOP_NAMESPACE", "value": settings.namespace}]
    return {"name": name, "image": settings.deploy_image, "imagePullPolicy": "IfNotPresent", "env": env,
            "resources": {"limits": limits, "requests": {"cpu": str(cpus), "memory": memory}}}


def rayservice(settings: Settings) -> dict[str, Any]:
    """A KubeRay ``RayService``: head + GPU worker group, GCS fault tolerance on an external Redis.

    GCS FT is switched on with the ``ray.io/ft-enabled`` annotation and ``RAY_REDIS_ADDRESS`` on the head,
    which every KubeRay 1.x accepts (``gcsFaultToleranceOptions`` exists only from 1.3 on).
    """
    head = _container("ray-head", settings, settings.head_cpus, settings.head_memory)
    head["env"].append({"name": "RAY_REDIS_ADDRESS", "value": settings.gcs_redis_address})
    head["ports"] = [{"containerPort": GCS_PORT, "name": "gcs-server"},
                     {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
                     {"containerPort": CLIENT_PORT, "name": "client"},
                     {"containerPort": settings.port, "name": "serve"}]
    worker = _container("ray-worker", settings, settings.node_cpus, settings.node_memory, settings.node_gpus)
    hi = max(settings.gpu_nodes_max or settings.gpu_nodes, settings.gpu_nodes)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": settings.deploy_name, "annotations": {"ray.io/ft-enabled": "true"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(settings), sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": hi > settings.gpu_nodes,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [head]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu", "replicas": settings.gpu_nodes, "minReplicas": settings.gpu_nodes,
                    "maxReplicas": hi, "rayStartParams": {},
                    "template": {"spec": {"containers": [worker]}},
                }],
            },
        },
    }


def cluster_launcher(settings: Settings) -> dict[str, Any]:
    """A Ray cluster-launcher YAML (``ray up``) for VMs on AWS: a head and an autoscaled GPU node type."""
    hi = max(settings.gpu_nodes_max or settings.gpu_nodes, settings.gpu_nodes)
    install = "pip install 'opsloop[gpu]'"
    return {
        "cluster_name": settings.deploy_name,
        "max_workers": hi,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": {"type": "aws", "region": settings.launcher_region, "cache_stopped_nodes": False},
        "auth": {"ssh_user": "ubuntu"},
        "docker": {"image": settings.deploy_image, "container_name": "ray_container", "pull_before_run": True,
                   "run_options": ["--ulimit nofile=65536:65536"]},
        "available_node_types": {
            "head": {"node_config": {"InstanceType": settings.launcher_head_type},
                     "resources": {"CPU": settings.head_cpus}, "min_workers": 0, "max_workers": 0},
            "gpu": {"node_config": {"InstanceType": settings.launcher_gpu_type},
                    "resources": {"CPU": settings.node_cpus, "GPU": settings.node_gpus},
                    "min_workers": settings.gpu_nodes, "max_workers": hi},
        },
        "head_node_type": "head",
        "setup_commands": [install],
        "head_start_ray_commands": [
            "ray stop",
            # GCS fault tolerance: the head keeps its tables in the external Redis and recovers them on restart.
            f"ulimit -n 65536; RAY_REDIS_ADDRESS={settings.gcs_redis_address} ray start --head --port={GCS_PORT} "
            "--dashboard-host=0.0.0.0 --autoscaling-config=~/ray_bootstrap_config.yaml",
            f"OPSLOOP_REDIS_URL={_app_redis_url(settings)} serve deploy ~/opsloop/serve.yaml",
        ],
        "worker_start_ray_commands": ["ray stop", f"ulimit -n 65536; ray start --address=$RAY_HEAD_IP:{GCS_PORT}"],
        "file_mounts": {"~/opsloop/serve.yaml": "./serve.yaml"},
    }


def render_all(settings: Settings) -> dict[str, dict[str, Any]]:
    """File name → document, for ``opsloop deploy render --out DIR``."""
    return {"serve.yaml": serve_config(settings), "rayservice.yaml": rayservice(settings),
            "cluster.yaml": cluster_launcher(settings)}
