"""The Kubernetes actuator with the official ``kubernetes`` client against a local stub of the Kubernetes API
(``k8s_api.py``: no API server can be installed here): a drain cordons, taints and evicts through the Eviction API,
a PodDisruptionBudget's 429 is honoured, a retry adds nothing twice, someone else's cordon is left alone, undo
(and ``resume_node``, through the gateway too) removes only this approval's cordon, the approval card states the exact
calls, ``migrate_job`` evicts a job's pods
from cordoned nodes only, ``cordon_gpu`` is refused before approval, and the server's errors reach the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle

from actors.gateway.service import GatewayService
from cluster.actuators import DryRunActuator, RoutedActuator, build_actuator
from cluster.actuators.kubernetes import TAINT_KEY, KubernetesActuator, configure
from cluster.actuators.results import BUDGET_S
from cluster.cli import build_parser
from cluster.cli._flags import settings_from_args
from cluster.settings import load_settings
from policies.actions import parse_action
from policies.policy import load_policy
from tests.actuators.k8s_api import PDB_MESSAGE, Fault, KubeApiStub, Pdb, write_kubeconfig
from tests.actuators.webhook_receiver import CAP
from tests.gateway.test_service import FakeFleet, opened, proposal, said
from tests.helpers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
DRAIN = parse_action({"kind": "drain_node", "node": "n01"})
MAP = {"n01": "kn01"}  # opsloop's n01 is the Node kn01
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
HELD = (f"default/db-0 (429 Too Many Requests: {PDB_MESSAGE} The disruption budget db-pdb needs 2 healthy pods and "
        "has 2 currently)")
LEFT = ("left: kube-system/dcgm-exporter-x (DaemonSet), kube-system/etcd-kn01 (static pod), default/debug (no "
        "controller: eviction would delete it for good)")


@pytest.fixture
def k8s() -> Iterator[KubeApiStub]:
    """The stub with two GPU nodes; on kn01 a Deployment's pod, a Job's pod, a StatefulSet's pod under a budget that
    allows no disruption, a DaemonSet's pod, a static pod and a bare pod; the Job's second pod on kn02."""
    with KubeApiStub() as stub:
        stub.add_node("kn01", taints=[GPU_TAINT])
        stub.add_node("kn02")
        stub.add_pod("default", "web-1", "kn01")
        stub.add_pod("default", "train-0", "kn01", owner="Job", labels={"job-name": "train"})
        stub.add_pod("default", "train-1", "kn02", owner="Job", labels={"job-name": "train"})
        stub.add_pod("default", "db-0", "kn01", owner="StatefulSet", labels={"app": "db"})
        stub.add_pod("kube-system", "dcgm-exporter-x", "kn01", owner="DaemonSet")
        stub.add_pod("kube-system", "etcd-kn01", "kn01", owner="Node", mirror=True)
        stub.add_pod("default", "debug", "kn01", owner=None)
        stub.pdbs.append(Pdb("default", "db-pdb", {"app": "db"}))
        yield stub


def actuator(stub: KubeApiStub, tmp: Path, **kw: Any) -> KubernetesActuator:
    return KubernetesActuator(configure(stub.kubeconfig(tmp / "kubeconfig")), MAP, **kw)


def ours(approval_id: str) -> dict[str, str]:
    return {"key": TAINT_KEY, "value": approval_id, "effect": "NoSchedule"}


def on(stub: KubeApiStub, node: str) -> list[str]:
    return sorted(f"{ns}/{name}" for (ns, name), p in stub.pods.items() if p["spec"]["nodeName"] == node)


def evicted(stub: KubeApiStub) -> list[str]:
    return sorted(c["path"].split("/")[4] + "/" + c["path"].split("/")[6] for c in stub.calls("POST", "/eviction"))


async def test_a_drain_cordons_taints_and_evicts_and_a_pdb_holds_its_pod(k8s: KubeApiStub, tmp_path: Path) -> None:
    r = await actuator(k8s, tmp_path).execute(DRAIN, "act-1", "ap-1", None)
    assert r.status == "executed", r.detail
    assert r.detail == (
        "kn01 (opsloop's n01) schedulable, taints: nvidia.com/gpu=present:NoSchedule → cordoned (unschedulable), "
        "taints: nvidia.com/gpu=present:NoSchedule, opsloop.io/drained=ap-1:NoSchedule; 2 pod(s) evicted "
        f"(default/web-1, default/train-0); held by a PodDisruptionBudget, left running: {HELD}; {LEFT}")
    spec = k8s.node_spec("kn01")
    assert spec["unschedulable"] is True and spec["taints"] == [GPU_TAINT, ours("ap-1")]
    [patch] = k8s.calls("PATCH")
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    assert patch["body"]["spec"] == {"unschedulable": True, "taints": [GPU_TAINT, ours("ap-1")]}
    assert patch["body"]["metadata"] == {"resourceVersion": "101"}  # conditional on what was read
    assert [c["body"]["apiVersion"] + " " + c["body"]["kind"] for c in k8s.calls("POST")] == ["policy/v1 Eviction"] * 3
    assert evicted(k8s) == ["default/db-0", "default/train-0", "default/web-1"]  # never DaemonSet, static, bare pods
    assert on(k8s, "kn01") == ["default/db-0", "default/debug", "kube-system/dcgm-exporter-x", "kube-system/etcd-kn01"]
    assert k8s.calls("GET", "/api/v1/pods")[0]["query"] == {"fieldSelector": "spec.nodeName=kn01"}
    assert r.targets == ("n01",) and on(k8s, "kn02") == ["default/train-1"]


async def test_a_retry_adds_nothing_twice_and_evicts_what_a_budget_allows_now(k8s: KubeApiStub,
                                                                              tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path)
    first = await act.execute(DRAIN, "act-2", "ap-2", None)
    asked = len(k8s.requests)
    assert await act.execute(DRAIN, "act-2", "ap-2", None) == first and len(k8s.requests) == asked  # same action id
    k8s.pdbs[0].disruptions_allowed = 1  # the StatefulSet is healthy again
    # A restarted gateway (a new actuator, nothing in memory) retries the same approval: no second patch or taint.
    again = await actuator(k8s, tmp_path).execute(DRAIN, "act-2", "ap-2", None)
    assert again.status == "executed" and again.detail.startswith(
        "kn01 (opsloop's n01) cordoned by this approval already (cordoned (unschedulable), taints: "
        "nvidia.com/gpu=present:NoSchedule, opsloop.io/drained=ap-2:NoSchedule): not patched again; 1 pod(s) "
        "evicted (default/db-0); left: ")
    assert len(k8s.calls("PATCH")) == 1 and k8s.node_spec("kn01")["taints"] == [GPU_TAINT, ours("ap-2")]
    assert "default/db-0" not in on(k8s, "kn01")


async def test_a_node_cordoned_by_someone_else_keeps_their_cordon(k8s: KubeApiStub, tmp_path: Path) -> None:
    maint = {"key": "example.com/maintenance", "value": "disk-swap", "effect": "NoSchedule"}
    k8s.add_node("kn01", unschedulable=True, taints=[maint])
    before = k8s.node_spec("kn01")
    act = actuator(k8s, tmp_path)
    r = await act.execute(DRAIN, "act-3", "ap-3", None)
    assert r.status == "executed" and r.detail.startswith(
        "kn01 (opsloop's n01) was cordoned by someone else (cordoned (unschedulable), taints: "
        "example.com/maintenance=disk-swap:NoSchedule): their cordon left as it is, no opsloop taint added; 2 pod(s) "
        "evicted")
    assert k8s.calls("PATCH") == [] and k8s.node_spec("kn01") == before
    undo = await act.undo(DRAIN, "act-3", "ap-3", None)
    assert undo.status == "failed" and undo.detail.endswith("not uncordoned, that cordon is someone else's")
    assert k8s.calls("PATCH") == [] and k8s.node_spec("kn01") == before


async def test_undo_removes_only_this_approvals_cordon_and_taint(k8s: KubeApiStub, tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path)
    assert (await act.execute(DRAIN, "act-4", "ap-4", None)).status == "executed"
    other = await act.undo(DRAIN, "act-9", "ap-9", None)
    assert other.status == "failed" and "not by opsloop.io/drained=ap-9:NoSchedule" in other.detail
    assert k8s.node_spec("kn01")["unschedulable"] is True
    undo = await act.undo(DRAIN, "act-4", "ap-4", None)
    assert undo.status == "executed", undo.detail
    assert undo.detail == (
        "kn01 (opsloop's n01) cordoned (unschedulable), taints: nvidia.com/gpu=present:NoSchedule, "
        "opsloop.io/drained=ap-4:NoSchedule → schedulable, taints: nvidia.com/gpu=present:NoSchedule (undid the "
        "drain of opsloop.io/drained=ap-4:NoSchedule; evicted pods are not brought back)")
    spec = k8s.node_spec("kn01")
    assert "unschedulable" not in spec and spec["taints"] == [GPU_TAINT]  # the site's taint stays
    twice = await act.undo(DRAIN, "act-4", "ap-4", None)
    assert twice.status == "executed" and twice.detail == (
        "kn01 (opsloop's n01) is schedulable, taints: nvidia.com/gpu=present:NoSchedule, no cordon or taint of "
        "opsloop.io/drained=ap-4:NoSchedule: nothing to do")


async def test_resume_node_lifts_only_the_drain_it_names(k8s: KubeApiStub, tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path)
    assert (await act.execute(DRAIN, "act-d", "ap-00000000d001", None)).status == "executed"
    drained = k8s.node_spec("kn01")
    other = parse_action({"kind": "resume_node", "node": "n01", "drained_by": "ap-00000000e002"})
    assert act.refusal(other) is None
    e = await act.effect(other, "ap-r0")
    assert (e.call, e.new) == ("nothing: kn01 (opsloop's n01) is cordoned by someone else, not opsloop.io/drained="
                               "ap-00000000e002:NoSchedule (it will fail, their cordon is kept)", "unchanged")
    left = await act.execute(other, "act-r0", "ap-r0", None)
    assert left.status == "failed" and left.detail == (
        "kn01 (opsloop's n01) is cordoned (unschedulable), taints: nvidia.com/gpu=present:NoSchedule, "
        "opsloop.io/drained=ap-00000000d001:NoSchedule, not by opsloop.io/drained=ap-00000000e002:NoSchedule: not "
        "uncordoned, that cordon is someone else's")
    assert k8s.calls("PATCH", "/nodes/kn01")[1:] == [] and k8s.node_spec("kn01") == drained

    resume = parse_action({"kind": "resume_node", "node": "n01", "drained_by": "ap-00000000d001"})
    e = await act.effect(resume, "ap-r1")
    body = {"metadata": {"resourceVersion": k8s.nodes["kn01"]["metadata"]["resourceVersion"]},
            "spec": {"unschedulable": False, "taints": [GPU_TAINT]}}
    assert e.call.startswith("PATCH /api/v1/nodes/kn01 (strategic merge) {")
    assert json.loads(e.call.split(" ", 4)[4]) == body
    assert e.current == ("kn01 (opsloop's n01) cordoned (unschedulable), taints: nvidia.com/gpu=present:NoSchedule, "
                         "opsloop.io/drained=ap-00000000d001:NoSchedule")
    assert e.new == ("kn01 (opsloop's n01) schedulable, taints: nvidia.com/gpu=present:NoSchedule: pods can be "
                     "scheduled there again (evicted ones are not brought back)")
    r = await act.execute(resume, "act-r1", "ap-r1", None)
    assert r.status == "executed" and r.targets == ("n01",) and r.detail.endswith(
        "→ schedulable, taints: nvidia.com/gpu=present:NoSchedule (undid the drain of "
        "opsloop.io/drained=ap-00000000d001:NoSchedule; evicted pods are not brought back)")
    assert k8s.calls("PATCH")[-1]["body"] == body, "the call stated is the call sent"
    spec = k8s.node_spec("kn01")
    assert "unschedulable" not in spec and spec["taints"] == [GPU_TAINT]
    patched = len(k8s.calls("PATCH"))
    again = await actuator(k8s, tmp_path).execute(resume, "act-r2", "ap-r2", None)  # a retry, a restarted gateway
    assert again.status == "executed" and again.detail.endswith("nothing to do")
    assert len(k8s.calls("PATCH")) == patched
    assert (await act.effect(resume, "ap-r2")).call.startswith("nothing: kn01 (opsloop's n01) has no cordon or taint")


async def test_a_changed_node_is_read_again_and_a_stale_opsloop_taint_replaced(k8s: KubeApiStub,
                                                                               tmp_path: Path) -> None:
    k8s.add_node("kn01", taints=[GPU_TAINT, ours("ap-old")])  # uncordoned by hand, our old taint left behind
    k8s.faults.append(Fault("PATCH", "/api/v1/nodes/kn01", 409, {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
        "message": 'Operation cannot be fulfilled on nodes "kn01": the object has been modified'}))
    r = await actuator(k8s, tmp_path).execute(DRAIN, "act-5", "ap-5", None)
    assert r.status == "executed", r.detail
    assert [c["method"] for c in k8s.calls(path="/nodes/")] == ["GET", "PATCH", "GET", "PATCH"]
    assert k8s.node_spec("kn01")["taints"] == [GPU_TAINT, ours("ap-5")]  # one opsloop taint: key and effect unique


async def test_the_approval_card_states_the_exact_calls_and_writes_nothing(k8s: KubeApiStub, tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path)
    e = await act.effect(DRAIN, "ap-6")
    body = {"metadata": {"resourceVersion": "101"},
            "spec": {"unschedulable": True, "taints": [GPU_TAINT, ours("ap-6")]}}
    patch, evictions = e.call.split("; then ")
    assert patch.startswith("PATCH /api/v1/nodes/kn01 (strategic merge) {")
    assert json.loads(patch.split(" ", 4)[4]) == body
    assert evictions == ("POST /api/v1/namespaces/<ns>/pods/<pod>/eviction (policy/v1 Eviction) for default/web-1, "
                         "default/train-0, default/db-0")
    assert e.where == f"the Kubernetes API server {k8s.url}"
    assert e.current == ("kn01 (opsloop's n01) schedulable, taints: nvidia.com/gpu=present:NoSchedule; 6 pod(s) on "
                         f"it, {LEFT}")
    assert e.new == ("kn01 (opsloop's n01) cordoned, taint opsloop.io/drained=ap-6:NoSchedule; 3 pod(s) evicted "
                     "unless a PodDisruptionBudget holds them (their controllers start them elsewhere)")
    assert e.text.startswith("PATCH /api/v1/nodes/kn01 (strategic merge) {") and f"on {e.where} — current: " in e.text
    assert k8s.calls("PATCH") == [] and k8s.calls("POST") == []
    await act.execute(DRAIN, "act-6", "ap-6", None)
    assert [c["body"] for c in k8s.calls("PATCH")] == [body], "the call stated is the call sent"
    assert (await act.effect(DRAIN, "ap-6")).call.startswith(
        "no PATCH (kn01 (opsloop's n01) is cordoned already, by this approval); then POST ")
    dead = KubernetesActuator(configure(k8s.kubeconfig(tmp_path / "dead", token="x")), MAP)
    unknown = await dead.effect(DRAIN, "ap-6")
    assert unknown.current == "unknown (node kn01: 401 Unauthorized: Unauthorized)"
    move = parse_action({"kind": "migrate_job", "job": "train", "avoid": ["n01"]})
    assert (await dead.effect(move, "ap-6")).current == "unknown (node kn01: 401 Unauthorized: Unauthorized)"
    cordon = await act.effect(parse_action({"kind": "cordon_gpu", "gpu": "n01/gpu3"}), "ap-6")
    assert cordon.call.startswith("nothing: cordon_gpu is not supported by Kubernetes") and cordon.new == "unchanged"


async def test_migrate_job_evicts_its_pods_from_cordoned_nodes_only(k8s: KubeApiStub, tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path)
    move = parse_action({"kind": "migrate_job", "job": "train", "avoid": ["n01/gpu0"]})
    refused = await act.execute(move, "act-7", "ap-7", None)
    assert refused.status == "failed" and refused.detail == (
        "kn01 is schedulable: a pod evicted from it could be placed there again (Kubernetes has no per-job node "
        "exclusion opsloop can set); drain_node it first")
    assert k8s.calls("POST") == [] and (await act.effect(move, "ap-7")).call.startswith("nothing: kn01 is schedulable")
    k8s.add_node("kn01", unschedulable=True)
    e = await act.effect(move, "ap-7")
    assert e.call == "POST /api/v1/namespaces/<ns>/pods/<pod>/eviction (policy/v1 Eviction) for default/train-0"
    assert e.current == "job train: default/train-0 on kn01 (Running), default/train-1 on kn02 (Running)"
    r = await act.execute(move, "act-7", "ap-7", None)
    assert r.status == "executed" and r.detail == "job train off kn01: 1 pod(s) evicted (default/train-0)"
    assert evicted(k8s) == ["default/train-0"] and on(k8s, "kn02") == ["default/train-1"]
    assert k8s.calls("GET", "/api/v1/pods")[-1]["query"] == {"labelSelector": "job-name=train"}
    k8s.add_pod("default", "train-0b", "kn02", owner="Job", labels={"job-name": "train"})  # the Job's replacement
    again = await actuator(k8s, tmp_path).execute(move, "act-7", "ap-7", None)
    assert again.status == "executed" and again.detail == (
        "job train: its 2 pod(s) run on kn02, none on kn01: nothing evicted")
    assert len(k8s.calls("POST")) == 1
    undo = await act.undo(move, "act-7", "ap-7", None)
    assert undo.status == "failed" and "cannot be undone" in undo.detail


async def test_migrate_job_refuses_what_it_cannot_move(k8s: KubeApiStub, tmp_path: Path) -> None:
    k8s.add_node("kn01", unschedulable=True)
    act = actuator(k8s, tmp_path, job_label="app")
    k8s.add_pod("other", "web-1", "kn01", labels={"app": "web-1"})
    cases = {"nosuch": "no pods labelled app=nosuch (a finished job, or another name or k8s_job_label)",
             "web-1": "pods labelled app=web-1 in 2 namespaces (default, other): which job is meant is ambiguous",
             "debug": "job debug off kn01: 0 pod(s) evicted; left: default/debug (no controller: eviction would "
                      "delete it for good)",
             "db": f"job db off kn01: 0 pod(s) evicted; held by a PodDisruptionBudget, left running: {HELD}"}
    for job, why in cases.items():
        r = await act.execute(parse_action({"kind": "migrate_job", "job": job, "avoid": ["n01"]}), job, "ap-8", None)
        assert (r.status, r.detail) == ("failed", why)
    bad = await act.execute(parse_action({"kind": "migrate_job", "job": "x", "avoid": ["n01:gpu"]}), "x", "ap", None)
    assert bad.status == "failed" and "'n01:gpu' is neither a node nor a GPU" in bad.detail
    assert [c["path"] for c in k8s.calls("POST")] == ["/api/v1/namespaces/default/pods/db-0/eviction"]
    assert "default/db-0" in on(k8s, "kn01")


async def test_the_servers_errors_are_failed_results_with_its_words(k8s: KubeApiStub, tmp_path: Path) -> None:
    act = actuator(k8s, tmp_path, timeout_s=1.0)
    r = await act.execute(parse_action({"kind": "drain_node", "node": "nosuch"}), "act-10", "ap-10", None)
    assert (r.status, r.detail) == ("failed", 'node nosuch: 404 Not Found: nodes "nosuch" not found')
    forbidden = ('nodes "kn01" is forbidden: User "system:serviceaccount:opsloop:gateway" cannot patch resource '
                 '"nodes" in API group "" at the cluster scope')
    k8s.faults.append(Fault("PATCH", "/nodes/kn01", 403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                          "message": forbidden, "reason": "Forbidden", "code": 403}))
    r = await act.execute(DRAIN, "act-11", "ap-11", None)
    assert (r.status, r.detail) == ("failed", f"cordon kn01 (opsloop's n01): 403 Forbidden: {forbidden}")
    k8s.faults.append(Fault("GET", "/nodes/kn01", 200, "<html>proxy login</html>"))
    r = await act.execute(DRAIN, "act-12", "ap-12", None)
    assert r.status == "failed" and r.detail.startswith("node kn01: the API server's answer does not parse (")
    k8s.faults.append(Fault("GET", "/nodes/kn01", 200, {"kind": "Node", "metadata": "oops"}))
    r = await act.execute(DRAIN, "act-12b", "ap-12", None)
    assert r.status == "failed" and r.detail.startswith("node kn01: the API server's answer does not parse (")
    k8s.faults.append(Fault("POST", "/pods/web-1/eviction", 500, "etcdserver: request timed out"))
    throttled = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
                 "message": "Too many requests, please try again later."}  # API priority and fairness, no budget
    k8s.faults.append(Fault("POST", "/pods/train-0/eviction", 429, throttled))
    r = await act.execute(DRAIN, "act-13", "ap-13", None)
    assert r.status == "failed" and "; eviction failed: default/web-1 (500 Internal Server Error: etcdserver: " \
        "request timed out), default/train-0 (429 Too Many Requests: Too many requests, please try again later.)" \
        in r.detail
    assert f"held by a PodDisruptionBudget, left running: {HELD}; eviction failed" in r.detail
    assert k8s.node_spec("kn01")["taints"][-1] == ours("ap-13"), "the cordon stays, undo can lift it"
    k8s.faults.append(Fault("GET", "/nodes/kn01", 200, {}, delay_s=3.0, times=2))  # and its retry
    r = await act.execute(DRAIN, "act-14", "ap-14", None)
    assert r.status == "failed" and r.detail.startswith("node kn01: no answer from the Kubernetes API server ")
    assert "timed out" in r.detail
    nobody = f"http://127.0.0.1:{free_port()}"
    gone = KubernetesActuator(configure(write_kubeconfig(tmp_path / "gone", nobody)), MAP)
    r = await gone.execute(DRAIN, "act-15", "ap-15", None)
    assert r.status == "failed" and r.detail.startswith("node kn01: no answer from the Kubernetes API server http://")
    assert BUDGET_S < 30  # under the gateway's bound on one execution


async def test_cordon_gpu_is_refused_before_approval_and_nothing_is_called(k8s: KubeApiStub, tmp_path: Path,
                                                                          redis_url: str) -> None:
    routed = RoutedActuator(DryRunActuator(), scheduler=actuator(k8s, tmp_path))
    gw = GatewayService(redis_url, "k8r", load_policy(), routed, fleet=FakeFleet())
    p = proposal({"kind": "cordon_gpu", "gpu": "n01/gpu3"},
                 {"kind": "open_ticket", "summary": "xid on n01/gpu3", "severity": "medium"})
    refused, ticket = await gw.submit(p)
    assert refused.refusal is not None and refused.refusal.code == "invalid"
    assert refused.refusal.message == (
        "cordon_gpu(gpu=n01/gpu3) refused before approval: cordon_gpu is not supported by Kubernetes: a node's GPUs "
        "are one extended resource (nvidia.com/gpu) with no per-device cordon, and cordoning the whole node would be "
        "a larger action than the one approved; propose drain_node n01 instead")
    assert ticket.approval is not None and ticket.approval.action.kind == "open_ticket"
    r = await routed.execute(parse_action({"kind": "cordon_gpu", "gpu": "n01/gpu3"}), "act-16", "ap-16", None)
    assert r.status == "failed" and r.detail.startswith("cordon_gpu is not supported by Kubernetes")
    assert k8s.requests == [] and "not a scheduler action" in str(routed.scheduler.refusal(CAP))


async def test_scheduler_kubernetes_drains_through_the_gateway(k8s: KubeApiStub, tmp_path: Path,
                                                               redis_url: str) -> None:
    kubeconfig = k8s.kubeconfig(tmp_path / "kubeconfig")
    args = build_parser().parse_args(["up", "--scheduler", "kubernetes", "--kubeconfig", str(kubeconfig)])
    flags = settings_from_args(args)
    assert (flags.scheduler, flags.k8s_kubeconfig) == ("kubernetes", kubeconfig)
    routed = build_actuator(load_settings(data_dir=str(tmp_path), actuator="dry-run", scheduler="kubernetes",
                                          k8s_kubeconfig=str(kubeconfig), k8s_nodes=MAP))
    assert isinstance(routed, RoutedActuator) and isinstance(routed.scheduler, KubernetesActuator)
    routed = cloudpickle.loads(cloudpickle.dumps(routed))  # as Ray hands it to the gateway actor (cluster/deploy.py)
    gw = GatewayService(redis_url, "k8g", load_policy(), routed, fleet=FakeFleet())
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    assert ap.effect is not None and ap.effect.call.startswith("PATCH /api/v1/nodes/kn01 (strategic merge)")
    await gw.decide(ap.approval_id, said(ap))
    assert k8s.calls("PATCH") == [], "one approval of two changes nothing"
    done = await gw.decide(ap.approval_id, said(ap, by="bob"))
    assert done.approval is not None and done.approval.status == "executed", done
    assert k8s.node_spec("kn01")["taints"] == [GPU_TAINT, ours(ap.approval_id)]

    resume = {"kind": "resume_node", "node": "n01", "drained_by": ap.approval_id}
    [back] = await opened(gw, proposal(resume, pid="pr-k8r"))  # not refused before approval
    assert back.status == "pending" and back.effect is not None
    assert back.effect.call.startswith("PATCH /api/v1/nodes/kn01 (strategic merge) {")
    resumed = (await gw.decide(back.approval_id, said(back))).approval
    assert resumed is not None and resumed.status == "executed", resumed
    spec = k8s.node_spec("kn01")
    assert "unschedulable" not in spec and spec["taints"] == [GPU_TAINT]


def test_settings_and_a_missing_client_fail_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"data_dir": str(tmp_path), "actuator": "dry-run", "scheduler": "kubernetes"}
    with pytest.raises(ValueError, match="k8s_kubeconfig .*nowhere is not a file"):
        build_actuator(load_settings(**base, k8s_kubeconfig=str(tmp_path / "nowhere")))
    (tmp_path / "empty").write_text("{}\n")
    with pytest.raises(ValueError, match="scheduler kubernetes: no usable configuration from .*empty"):
        build_actuator(load_settings(**base, k8s_kubeconfig=str(tmp_path / "empty")))
    (tmp_path / "broken").write_text("clusters: [\n")
    with pytest.raises(ValueError, match="scheduler kubernetes: no usable configuration from .*broken"):
        build_actuator(load_settings(**base, k8s_kubeconfig=str(tmp_path / "broken")))
    with pytest.raises(ValueError, match="a Kubernetes Node name is a DNS subdomain"):
        load_settings(data_dir=str(tmp_path), k8s_nodes={"n01": "Bad_Name"})
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # not installed
    with pytest.raises(ValueError, match=r"needs the official Kubernetes client: pip install 'opsloop\[kubernetes\]'"):
        build_actuator(load_settings(**base, k8s_kubeconfig=str(tmp_path / "empty")))
