"""Rendered deployment files validate against the schemas their tools publish."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from cluster.cli import main
from cluster.render import cluster_launcher, rayservice, render_all, serve_config
from cluster.settings import Settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kuberay"


def settings(**kw) -> Settings:  # noqa: ANN003
    base = {"data_dir": "/tmp/opsloop-render-test", "accelerator": "H100", "tensor_parallel_size": 4,
            "llm_replicas": 2, "llm_max_replicas": 4, "gpu_nodes": 2, "gpu_nodes_max": 4, "node_gpus": 8}
    return Settings(**{**base, **kw})


def crd_schema() -> dict:
    crd = yaml.safe_load((FIXTURES / "ray.io_rayservices.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def launcher_schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def test_serve_config_validates_with_serve_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = serve_config(settings())
    parsed = ServeDeploySchema.model_validate(cfg)
    names = [a.name for a in parsed.applications]
    assert names == ["opsloop-llm", "opsloop"]
    llm = cfg["applications"][0]["args"]["llm_config"]
    assert llm["placement_group_config"]["strategy"] == "STRICT_PACK"
    assert llm["placement_group_config"]["bundles"] == [{"CPU": 1, "GPU": 1}] * 4
    auto = llm["deployment_config"]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (2, 4)
    ingress = cfg["applications"][1]
    assert ingress["deployments"][0]["ray_actor_options"] == {"num_cpus": 0}


def test_serve_config_without_llm_and_no_secrets() -> None:
    cfg = serve_config(settings(llm="none", admin_token="s3cret", slack_bot_token="xoxb-1"))
    assert [a["name"] for a in cfg["applications"]] == ["opsloop"]
    assert "s3cret" not in json.dumps(cfg) and "xoxb" not in json.dumps(cfg)


def test_builders_named_in_the_config_exist() -> None:
    import importlib

    for app in serve_config(settings())["applications"]:
        module, attr = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_rayservice_validates_against_kuberay_crd() -> None:
    doc = rayservice(settings())
    jsonschema.validate(doc, crd_schema())
    spec = doc["spec"]["rayClusterConfig"]
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (2, 4)
    assert doc["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"
    head_env = {e["name"]: e["value"] for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert head_env["RAY_REDIS_ADDRESS"] == "opsloop-gcs-redis:6379"
    # serveConfigV2 is the Serve config itself, as YAML text.
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))


def test_crd_fixture_rejects_a_broken_manifest() -> None:
    doc = rayservice(settings())
    del doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema())
    doc = rayservice(settings())
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema())


def test_cluster_launcher_validates_against_ray_schema() -> None:
    doc = cluster_launcher(settings())
    jsonschema.validate(doc, launcher_schema())
    assert doc["available_node_types"]["gpu"]["resources"] == {"CPU": 64, "GPU": 8}
    assert doc["available_node_types"]["gpu"]["max_workers"] == 4
    assert any("RAY_REDIS_ADDRESS=" in c for c in doc["head_start_ray_commands"])


def test_a_replica_larger_than_a_node_is_refused() -> None:
    with pytest.raises(ValueError, match="packed on one node"):
        serve_config(settings(tensor_parallel_size=16, node_gpus=8))


def test_cli_writes_the_three_files(tmp_path: Path) -> None:
    assert main(["deploy", "render", "--out", str(tmp_path), "--accelerator", "A100", "--node-gpus", "4",
                 "--tensor-parallel-size", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml", "rayservice.yaml", "serve.yaml"]
    jsonschema.validate(yaml.safe_load((tmp_path / "rayservice.yaml").read_text()), crd_schema())
    jsonschema.validate(yaml.safe_load((tmp_path / "cluster.yaml").read_text()), launcher_schema())
    assert set(render_all(settings())) == {"serve.yaml", "rayservice.yaml", "cluster.yaml"}
    assert main(["deploy", "render", "--out", str(tmp_path), "--accelerator", "A100", "--node-gpus", "2",
                 "--tensor-parallel-size", "4"]) == 2
