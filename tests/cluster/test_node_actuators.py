"""Three Ray nodes on one machine, named by the ``opsloop.io/node`` label (the head n01 without a GPU, n02 and n03
with two fake GPUs each): a power limit for a GPU of n03 runs in n03's actuator, on n03's Ray node, and an action for
n01, which has no actuator, is refused by the gateway before approval. NVML itself is the stub of
``tests/actuators/nvml_stub.py`` inside each node's actuator (no GPU here)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from actors.gateway.service import GatewayService
from cluster.actuators import RoutedActuator, build_actuator
from cluster.actuators.node import NodeActuators, start_node_actuators
from cluster.nvml_readers import NODE_LABEL, gpu_nodes
from cluster.settings import Settings
from policies.policy import load_policy
from tests.actuators.nvml_stub import StubGpu, StubNvml
from tests.gateway.test_service import proposal, said

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

NS = "nodeact"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="ol-na-", dir="/tmp")
    os.makedirs(os.path.dirname(ray._private.utils.get_ray_address_file(None)), exist_ok=True)  # see test_multinode
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": tmp, "include_dashboard": False,
                                                      "labels": {NODE_LABEL: "n01"}})
    c.named = {name: c.add_node(num_cpus=1, num_gpus=2, labels={NODE_LABEL: name}) for name in ("n02", "n03")}
    c.wait_for_nodes()
    ray.init(address=c.address, namespace=NS, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def nodes(cluster: Any) -> NodeActuators:
    return start_node_actuators(NS, nv=StubNvml([StubGpu(), StubGpu(lo_mw=150_000, hi_mw=500_000,
                                                                    limit_mw=500_000)]))


def actor_node(name: str) -> str:
    """The Ray node id the alive actor ``name`` runs on, from the GCS actor table."""
    import ray

    [node] = [info["Address"]["NodeID"] for info in ray._private.state.actors().values()
              if info.get("Name") == name and info.get("State") == "ALIVE"]
    return str(node)


class Fleet:
    """The twin as the gateway asks it: the three nodes' GPUs exist in its topology."""

    async def snapshot(self) -> dict:
        return {"ts": 50.0, "gpus": [], "units": []}

    async def topology(self) -> dict:
        return {"gpu": [f"n0{n}/gpu{i}" for n in (1, 2, 3) for i in (0, 1)], "node": ["n01", "n02", "n03"],
                "unit": []}


@pytest.mark.anyio
async def test_a_power_limit_for_node_bs_gpu_runs_in_node_bs_actuator(cluster: Any, nodes: NodeActuators,
                                                                       tmp_path: Any) -> None:
    b = cluster.named["n03"]
    assert [(n["host"], n["node_id"]) for n in gpu_nodes()] == [(k, v.node_id) for k, v in cluster.named.items()]
    assert list(nodes.ports) == ["n02", "n03"], "one actuator per GPU node, none on the head"
    where = {k: inv["ray_node"] for k, inv in nodes.inventory.items()}
    assert where == {k: v.node_id for k, v in cluster.named.items()}
    assert actor_node("actuator-n03") == b.node_id and actor_node("actuator-n02") == cluster.named["n02"].node_id

    routed = build_actuator(Settings(data_dir=tmp_path, actuator="nvml"), nodes=nodes)
    assert isinstance(routed, RoutedActuator)
    r = await routed.execute(proposal({"kind": "set_power_limit", "gpu": "n03/gpu1", "watts": 320}).actions[0].action,
                             "act-b1", "ap-b1", None)
    assert r.status == "executed", r.detail
    assert r.detail == f"on n03 (Ray node {b.node_id[:12]}): gpu1 power limit 500 -> 320 W"
    again = await routed.execute(proposal({"kind": "set_power_limit", "gpu": "n03/gpu1", "watts": 250}
                                          ).actions[0].action, "act-b2", "ap-b2", None)
    assert again.detail.endswith("gpu1 power limit 320 -> 250 W"), "n03's own GPU state: the first limit held"
    other = await routed.execute(proposal({"kind": "set_power_limit", "gpu": "n02/gpu1", "watts": 300}
                                          ).actions[0].action, "act-b3", "ap-b3", None)
    assert other.detail == f"on n02 (Ray node {cluster.named['n02'].node_id[:12]}): gpu1 power limit 500 -> 300 W"


@pytest.mark.anyio
async def test_an_action_for_a_node_without_an_actuator_is_refused_before_approval(
        cluster: Any, nodes: NodeActuators, redis_url: str, tmp_path: Any) -> None:
    routed = build_actuator(Settings(data_dir=tmp_path, actuator="nvml"), nodes=nodes)
    gw = GatewayService(redis_url, NS, load_policy(), routed, fleet=Fleet())
    p = proposal({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 300},
                 {"kind": "set_power_limit", "gpu": "n02/gpu0", "watts": 450})
    refused, opened = await gw.submit(p)
    assert refused.refusal is not None and refused.refusal.message == (
        "set_power_limit(gpu=n01/gpu0, watts=300.0) refused before approval: no actuator runs on node n01: "
        "set_power_limit and reset_gpu run only in the actuator of a GPU node of the Ray cluster, on that node "
        "(actuators on: n02, n03)")
    assert opened.approval is not None and opened.approval.status == "pending"
    assert [a["action"]["gpu"] for a in await gw.list()] == ["n02/gpu0"], "an approval opened for n01"
    done = await gw.decide(opened.approval.approval_id, said(opened.approval))
    assert done.approval is not None and done.approval.status == "executed", done
    assert done.approval.result is not None and done.approval.result["detail"] == (
        f"on n02 (Ray node {cluster.named['n02'].node_id[:12]}): gpu0 power limit 700 -> 450 W")
