"""Settings of the deployment files `opsloop deploy render` writes (Serve config, KubeRay, cluster launcher).

Part of the one settings model (:class:`cluster.settings.Settings` inherits these fields); see docs/deploy.md.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DeploySettings(BaseModel):
    """Names, images and machine sizes of a rendered cluster."""

    deploy_name: str = Field(
        "opsloop", pattern=r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$",
        description="Name of the rendered RayService, Ray cluster and Serve apps' cluster (a DNS label).",
    )
    deploy_image: str = Field(
        "rayproject/ray:2.60.0-py311",
        description="Container image of the head and worker nodes (KubeRay, cluster launcher): Ray 2.60 with "
        "opsloop installed (pip install 'opsloop[gpu]' on GPU nodes).",
    )
    gcs_redis_address: str = Field(
        "opsloop-gcs-redis:6379",
        description="host:port of the external Redis the Ray head keeps its GCS state in (GCS fault tolerance: "
        "a restarted head recovers actors, placement groups and Serve apps).",
    )
    head_cpus: int = Field(8, ge=1, description="CPUs of the head node (rendered deployment files).")
    head_memory: str = Field("32Gi", description="Memory of the head node pod (a Kubernetes quantity).")
    gpu_nodes: int = Field(2, ge=0, le=4096, description="GPU worker nodes at start (rendered deployment files).")
    gpu_nodes_max: int | None = Field(
        None, ge=0, le=4096, description="Most GPU worker nodes the Ray autoscaler may add. Unset: equal to gpu_nodes."
    )
    node_gpus: int = Field(8, ge=1, le=16, description="GPUs per GPU worker node (rendered deployment files).")
    node_cpus: int = Field(64, ge=1, description="CPUs per GPU worker node (rendered deployment files).")
    node_memory: str = Field("512Gi", description="Memory per GPU worker node pod (a Kubernetes quantity).")
    launcher_region: str = Field("us-west-2", description="Cloud region of the rendered cluster-launcher YAML (AWS).")
    launcher_head_type: str = Field("m5.2xlarge", description="Instance type of the head VM (cluster launcher).")
    launcher_gpu_type: str = Field(
        "p4d.24xlarge", description="Instance type of the GPU worker VMs (cluster launcher)."
    )
