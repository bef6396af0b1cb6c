"""The NVML actuator's logic over a stub of the NVML calls (no GPU here): power limits only within NVML's
constraints, resets only of an idle GPU, each node's actions only on that node; the node route refuses before
approval what no node can carry out. On Ray: ``tests/cluster/test_node_actuators.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.actuators import DryRunActuator, NvmlActuator, RoutedActuator, build_actuator
from cluster.actuators.node import NodeActuator, NodeActuators
from cluster.nvml_readers import gpu_nodes, node_name
from cluster.settings import Settings
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, parse_action
from tests.actuators.nvml_stub import StubGpu, StubNvml

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def cap(gpu: str, watts: float) -> Action:
    return parse_action({"kind": "set_power_limit", "gpu": gpu, "watts": watts})


def reset(gpu: str) -> Action:
    return parse_action({"kind": "reset_gpu", "gpu": gpu})


def fake_smi(tmp_path: Path, exit_code: int = 0, say: str = "") -> tuple[str, Path]:
    """An ``nvidia-smi`` that logs its arguments (the reset's other boundary)."""
    log = tmp_path / "smi.log"
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\necho '{say}' >&2\nexit {exit_code}\n")
    smi.chmod(0o755)
    return str(smi), log


async def test_a_power_limit_within_nvmls_range_is_set_on_the_named_gpu() -> None:
    nv = StubNvml([StubGpu(), StubGpu()])
    act = NodeActuator("n02", nv)
    r = await act.execute(cap("n02/gpu1", 350), "a-1", "ap-1", None)
    assert (r.status, r.detail) == ("executed", "on n02: gpu1 power limit 700 -> 350 W")
    assert r.previous == {"watts": 700.0}, "the limit before, as data: what an undo sets back"
    assert nv.set_calls == [(1, 350_000)] and nv.sessions == 0, "one NVML session per call, closed"
    assert await act.execute(cap("n02/gpu1", 350), "a-1", "ap-1", None) == r and len(nv.set_calls) == 1
    assert act.inventory() == {"node": "n02", "ray_node": None, "limits_w": [[200.0, 700.0], [200.0, 700.0]]}


async def test_a_power_limit_outside_nvmls_range_is_refused_not_clamped() -> None:
    nv = StubNvml([StubGpu(lo_mw=250_000, hi_mw=600_000, limit_mw=600_000)])
    r = await NodeActuator("n02", nv).execute(cap("n02/gpu0", 700), "a-2", "ap-2", None)
    assert r.status == "failed" and nv.set_calls == [] and nv.gpus[0].limit_mw == 600_000
    assert r.detail == ("on n02: gpu0 takes power limits of 250-600 W (NVML's constraints); 700 W is outside, "
                        "nothing changed")
    missing = await NodeActuator("n02", nv).execute(cap("n02/gpu4", 300), "a-3", "ap-3", None)
    assert missing.status == "failed" and "there is no gpu4" in missing.detail


async def test_nvml_refusing_is_a_failed_result_that_says_root() -> None:
    nv = StubNvml([StubGpu()], root=False)
    r = await NvmlActuator(nv).execute(cap("n01/gpu0", 300), "a-4", "ap-4", None)
    assert r.status == "failed" and "NVML refused" in r.detail and "root" in r.detail and nv.sessions == 0
    other = await NvmlActuator(nv).execute(parse_action({"kind": "drain_node", "node": "n01"}), "a-5", "ap-5", None)
    assert other.status == "failed" and "only sets power limits and resets GPUs, not drain_node" in other.detail


async def test_a_gpu_in_use_is_not_reset(tmp_path: Path) -> None:
    smi, log = fake_smi(tmp_path)
    nv = StubNvml([StubGpu(), StubGpu(pids=[4242, 17])])
    act = NodeActuator("n03", nv, smi)
    busy = await act.execute(reset("n03/gpu1"), "a-6", "ap-6", None)
    assert busy.status == "failed" and busy.detail == (
        "on n03: gpu1 is in use by 2 process(es) (pid 17, 4242): not reset; stop or move them first")
    assert not log.exists(), "nvidia-smi ran on a busy GPU"
    nv.gpus[1].pids.clear()
    done = await act.execute(reset("n03/gpu1"), "a-7", "ap-7", None)
    assert (done.status, done.detail) == ("executed", "on n03: gpu1 reset")
    assert log.read_text().split("\n") == ["--gpu-reset -i 1", ""]


async def test_a_reset_nvidia_smi_refuses_is_a_failed_result(tmp_path: Path) -> None:
    smi, _ = fake_smi(tmp_path, exit_code=3, say="Insufficient Permissions")
    r = await NodeActuator("n03", StubNvml([StubGpu()]), smi).execute(reset("n03/gpu0"), "a-8", "ap-8", None)
    assert r.status == "failed" and r.detail == "on n03: nvidia-smi --gpu-reset -i 0 failed: Insufficient Permissions"


async def test_a_node_actuator_never_acts_for_another_node() -> None:
    nv = StubNvml([StubGpu()])
    r = await NodeActuator("n02", nv).execute(cap("n03/gpu0", 300), "a-9", "ap-9", None)
    assert r.status == "failed" and r.detail == "on n02: n03/gpu0 is on n03, not here" and nv.set_calls == []


class Dead:
    async def execute(self, *args: Any) -> ActionResult:
        raise ConnectionError("node n03 died")

    async def effect(self, *args: Any) -> Any:
        raise ConnectionError("node n03 died")


async def test_the_node_route_refuses_what_no_node_can_carry_out_and_runs_the_rest_on_its_node() -> None:
    b_nv, c_nv = StubNvml([StubGpu(), StubGpu()]), StubNvml([StubGpu(lo_mw=100_000, hi_mw=400_000)])
    b, c = NodeActuator("n02", b_nv), NodeActuator("n03", c_nv)
    nodes = NodeActuators({"n03": c, "n02": b}, {"n02": b.inventory(), "n03": c.inventory()})
    assert nodes.refusal(cap("n01/gpu0", 300)) == (
        "no actuator runs on node n01: set_power_limit and reset_gpu run only in the actuator of a GPU node of the "
        "Ray cluster, on that node (actuators on: n02, n03)")
    assert nodes.refusal(reset("n03/gpu1")) == "node n03 has 1 GPU(s); there is no gpu1"
    assert nodes.refusal(cap("n03/gpu0", 450)) == (
        "n03/gpu0 takes power limits of 100-400 W (NVML's constraints); 450 W is outside")
    assert nodes.refusal(cap("n02/gpu1", 450)) is None and nodes.refusal(reset("n02/gpu1")) is None

    r = await nodes.execute(cap("n02/gpu1", 450), "a-10", "ap-10", None)
    assert r.status == "executed" and r.detail.startswith("on n02: ") and b_nv.set_calls == [(1, 450_000)]
    refused = await nodes.execute(cap("n01/gpu0", 300), "a-11", "ap-11", None)
    assert refused.status == "failed" and refused.detail.startswith("no actuator runs on node n01")
    assert c_nv.set_calls == [] and len(b_nv.set_calls) == 1, "a refused action ran somewhere else"

    lost = NodeActuators({"n02": b, "n03": Dead()})
    gone = await lost.execute(cap("n03/gpu0", 300), "a-12", "ap-12", None)
    assert gone.status == "failed" and gone.detail == (
        "the actuator on n03 is unreachable: ConnectionError: node n03 died")


async def test_the_node_route_states_the_effect_its_nodes_actuator_reads() -> None:
    b_nv = StubNvml([StubGpu(limit_mw=650_000), StubGpu()])
    b = NodeActuator("n02", b_nv)
    nodes = NodeActuators({"n02": b, "n03": Dead()}, {"n02": b.inventory()})
    e = await nodes.effect(cap("n02/gpu0", 450), "ap-13")
    assert e.text == ("nvmlDeviceSetPowerManagementLimit(gpu0, 450000 mW) on NVML on n02, GPU index 0 — "
                      "current: power limit 650 W (NVML); new: power limit 450 W")
    assert await b.effect(cap("n02/gpu0", 450), "ap-13") == e, "the route states what the node's actuator states"
    assert b_nv.set_calls == [], "stating the effect changed something"
    refused = await nodes.effect(cap("n01/gpu0", 300), "ap-14")
    assert refused.call.startswith("nothing: no actuator runs on node n01") and refused.new == "unchanged"
    lost = await nodes.effect(cap("n03/gpu0", 300), "ap-15")
    assert lost.current == "unknown (the actuator on n03 is unreachable: ConnectionError: node n03 died)"
    assert lost.new == "n03/gpu0 power limit 300 W"


async def test_node_local_kinds_route_to_the_nodes_and_the_rest_to_the_base(tmp_path: Path) -> None:
    b = NodeActuator("n02", StubNvml([StubGpu()]))
    nodes = NodeActuators({"n02": b}, {"n02": b.inventory()})
    routed = build_actuator(Settings(data_dir=tmp_path, actuator="nvml"), nodes=nodes)
    assert isinstance(routed, RoutedActuator)
    assert routed.route(cap("n02/gpu0", 300)) is nodes and routed.route(reset("n02/gpu0")) is nodes
    note = parse_action({"kind": "notify", "message": "hi"})
    assert isinstance(routed.route(note), NvmlActuator) and routed.refusal(note) is None
    assert routed.refusal(cap("n09/gpu0", 300)) is not None
    assert isinstance(build_actuator(Settings(data_dir=tmp_path, actuator="nvml")), NvmlActuator), \
        "without node actuators (no Ray cluster): this host's"
    with pytest.raises(ValueError, match="two actuators for reset_gpu, set_power_limit"):
        RoutedActuator(DryRunActuator(), scheduler=nodes, scheduler_kinds=("reset_gpu", "set_power_limit"),
                       nodes=nodes)


def test_a_node_is_named_by_its_label_else_its_host_and_names_are_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def entry(nid: str, labels: dict[str, str], gpus: float = 1) -> dict[str, Any]:
        return {"NodeID": nid, "Alive": True, "NodeManagerHostname": "box", "Labels": labels,
                "Resources": {"GPU": gpus} if gpus else {}}

    assert node_name(entry("a", {"opsloop.io/node": "n02"})) == "n02"
    assert node_name(entry("a", {"ray.io/node-id": "a"})) == "box"
    monkeypatch.setattr(ray, "nodes", lambda: [entry("b", {"opsloop.io/node": "n03"}), entry("h", {}, gpus=0),
                                               entry("a", {"opsloop.io/node": "n02"})])
    assert gpu_nodes() == [{"node_id": "a", "host": "n02"}, {"node_id": "b", "host": "n03"}]
    monkeypatch.setattr(ray, "nodes", lambda: [entry("a", {}), entry("b", {})])
    with pytest.raises(ValueError, match=r"two GPU nodes are named box .*ray start --labels opsloop.io/node=NAME"):
        gpu_nodes()


@pytest.mark.gpu
async def test_a_node_actuator_on_a_real_gpu_sets_its_own_limit_again() -> None:
    """Where a GPU exists: the same code over the real pynvml; the limit set is the one in force (no change)."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVIDIA GPU on this host")
    try:
        now_w = pynvml.nvmlDeviceGetPowerManagementLimit(pynvml.nvmlDeviceGetHandleByIndex(0)) / 1000.0
    finally:
        pynvml.nvmlShutdown()
    act = NodeActuator("here")
    [lo, hi], *_ = act.inventory()["limits_w"]
    assert 0 < lo <= now_w <= hi
    if not 100.0 <= now_w <= 1000.0:
        pytest.skip(f"gpu0's limit {now_w:g} W is outside the catalogue's 100-1000 W")
    r = await act.execute(cap("here/gpu0", now_w), "a-gpu", "ap-gpu", None)
    assert r.status == "executed" or "root" in r.detail, r.detail
