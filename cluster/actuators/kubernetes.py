"""The Kubernetes actuator (setting ``scheduler=kubernetes``): ``drain_node``, its undo ``resume_node``, and
``migrate_job`` through the API server with the official ``kubernetes`` client (the optional extra: ``pip install
'opsloop[kubernetes]'``, imported only when this actuator is built), once for the whole cluster, from the gateway;
``cordon_gpu`` is refused.

* ``drain_node``: the node is cordoned (``spec.unschedulable: true``) and tainted ``opsloop.io/drained=<approval
  id>:NoSchedule`` in one strategic merge patch, conditional on the ``resourceVersion`` it read (a conflict re-reads),
  then its pods are evicted through the Eviction API (policy/v1), as ``kubectl drain`` does: DaemonSet pods, static
  (mirror) pods and pods already terminating are skipped; a pod no controller owns is left (evicting it would delete
  it for good: ``kubectl drain`` refuses it without ``--force``), unless it has finished. An eviction a
  PodDisruptionBudget refuses (429) is honoured: the pod keeps running and the result names it and the budget's
  words; the drain is still executed (the node takes no new pods) and a retry tries those pods again. A node this
  approval cordoned already is not patched again (a retry adds nothing twice); a node cordoned by anyone else is
  left with their cordon and taints (nothing of opsloop's added, so undo never uncordons it), and its pods are
  evicted. :meth:`KubernetesActuator.uncordon_node`, the undo, uncordons and removes the taint only when the taint is
  this approval's; evicted pods are not brought back (their controllers placed them elsewhere).
* ``resume_node`` (``drained_by``: the drain's approval) runs that undo: a node cordoned by anyone else keeps their
  cordon (the result, failed, says so); a node with no cordon or taint of that drain is left (executed, nothing to
  do), so a retry patches nothing twice.
* ``migrate_job``: the job's pods (label ``k8s_job_label=<job>``, ``job-name`` by default: a batch Job's pods) on
  the ``avoid`` nodes (a GPU stands for its node) are evicted, so their controller starts them elsewhere. Kubernetes
  has no per-job node exclusion opsloop could set (a Job's pod template is immutable), so it is refused, with the
  reason, unless every avoided node is cordoned (``drain_node`` first): otherwise a replacement could land on the
  same node. Pods of the label in several namespaces are refused as ambiguous; a pod no controller owns is left (it
  would be deleted, not moved); a pod a PodDisruptionBudget holds stays (with none moved, the migration failed). A
  retry finds the evicted pods gone and evicts nothing twice. No undo.
* ``cordon_gpu``: refused before approval (:meth:`KubernetesActuator.refusal`): a node's GPUs are one extended
  resource (``nvidia.com/gpu``) with no per-device cordon, and cordoning the node is the larger ``drain_node``.

Before anyone approves, :meth:`KubernetesActuator.effect` states the exact API calls, after reading the node and
pods. Node names: ``k8s_nodes`` maps opsloop's name to the Node's where they differ. The client is configured from
``k8s_kubeconfig`` (unset: the in-cluster service account, else ``KUBECONFIG`` / ``~/.kube/config``) and
``k8s_context``; each call has ``k8s_timeout_s`` (the client is synchronous: calls run in threads), a whole execution
:data:`~cluster.actuators.results.BUDGET_S`. An API error is a ``failed`` result carrying the server's own message.
The gateway's service account needs ``get``/``patch`` on nodes, ``list`` on pods and ``create`` on ``pods/eviction``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from actors.gateway.effects import Effect, new_value
from cluster.actuators.results import BoundedActuator, action_result
from cluster.actuators.slurm import SCHEDULER_KINDS, UNDO_KINDS
from cluster.telemetry.samples import ActionResult
from policies.actions import NODE_PATTERN, Action, CordonGpu, DrainNode, MigrateJob, ResumeNode, describe

if TYPE_CHECKING:
    from cluster.settings import Settings

#: The key of opsloop's taint on a node it drained; the value is the approval id, the effect NoSchedule.
TAINT_KEY = "opsloop.io/drained"
#: Bound of reading the cluster for an approval card's effect (under the gateway's 5 s).
EFFECT_S = 4.0
#: Evictions in flight at once.
EVICTING = 4
INSTALL = "pip install 'opsloop[kubernetes]'"
#: Why ``cordon_gpu`` is refused.
NO_GPU_CORDON = ("cordon_gpu is not supported by Kubernetes: a node's GPUs are one extended resource (nvidia.com/gpu) "
                 "with no per-device cordon, and cordoning the whole node would be a larger action than the one "
                 "approved; propose drain_node {node} instead")

_GPU = re.compile(rf"^({NODE_PATTERN})/gpu[0-9]{{1,3}}$")
_NODE = re.compile(rf"^{NODE_PATTERN}$")


class KubeFailure(Exception):
    """An API call failed or got no answer; the message says which and carries the server's words (``status``: the
    HTTP status of an API error, ``None`` for no answer)."""

    def __init__(self, message: str, status: int | None = None, said: str = "") -> None:
        super().__init__(message)
        self.status, self.said = status, said or message


class Unmovable(KubeFailure):
    """``migrate_job`` cannot move the job (the cluster answered; what it said rules the migration out)."""


def kubernetes_client() -> Any:
    """The ``kubernetes`` package, imported on first use.

    Raises:
        ValueError: it is not installed (the message says how to install it).
    """
    try:
        import kubernetes
    except ImportError as exc:
        raise ValueError(f"scheduler kubernetes needs the official Kubernetes client: {INSTALL}") from exc
    return kubernetes


def configure(kubeconfig: Path | str | None = None, context: str | None = None) -> Any:
    """The client's ``Configuration`` from ``kubeconfig`` (``None``: in-cluster, else the default kubeconfig).

    Raises:
        ValueError: the client is missing or no configuration loads (the message says why).
    """
    k8s = kubernetes_client()
    cfg = k8s.client.Configuration()
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        raise ValueError(f"scheduler kubernetes: k8s_kubeconfig {kubeconfig} is not a file")
    try:
        if kubeconfig is None:
            try:
                k8s.config.load_incluster_config(client_configuration=cfg)
            except k8s.config.ConfigException:
                k8s.config.load_kube_config(context=context, client_configuration=cfg)
        else:
            k8s.config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
    except (k8s.config.ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        where = kubeconfig or "in-cluster or the default kubeconfig (set k8s_kubeconfig)"
        said = " ".join(str(exc).split())[:300]
        raise ValueError(f"scheduler kubernetes: no usable configuration from {where}: {said}") from None
    cfg.retries = 1  # one retry of a dropped connection; the execution's bound rules the rest
    return cfg


def _taint(t: Mapping[str, Any]) -> str:
    return f"{t.get('key')}{'=' + str(t['value']) if t.get('value') else ''}:{t.get('effect')}"


def _names(labels: Sequence[str], most: int = 10) -> str:
    more = f" and {len(labels) - most} more" if len(labels) > most else ""
    return ", ".join(labels[:most]) + more


@dataclass(frozen=True)
class NodeView:
    """What the actuator reads of a Node: its cordon, taints (as JSON) and ``resourceVersion``."""

    name: str
    unschedulable: bool
    taints: tuple[dict[str, Any], ...]
    resource_version: str

    def tainted(self, approval_id: str) -> bool:
        """Whether it carries ``approval_id``'s taint."""
        return any(t.get("key") == TAINT_KEY and t.get("value") == approval_id for t in self.taints)

    def state(self) -> str:
        cordon = "cordoned (unschedulable)" if self.unschedulable else "schedulable"
        return f"{cordon}, taints: {', '.join(_taint(t) for t in self.taints) or 'none'}"


@dataclass(frozen=True)
class PodView:
    """What the actuator reads of a Pod, and whether an eviction takes it (``skip``: why not)."""

    namespace: str
    name: str
    node: str
    phase: str
    skip: str = ""

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


class KubernetesActuator(BoundedActuator):
    """``drain_node``, ``resume_node`` and ``migrate_job`` through the Kubernetes API (see the module's docstring).

    Its client is made on first use from ``config``, so the actuator pickles (Ray hands it to the gateway actor).

    Args:
        config: The client's ``Configuration`` (:func:`configure`).
        nodes: opsloop node name → Kubernetes Node name, where they differ.
        job_label: The pod label whose value names a job (``migrate_job``).
        timeout_s: Bound of one API call.
    """

    answers = "the Kubernetes API"
    failure = (KubeFailure,)

    def __init__(self, config: Any, nodes: Mapping[str, str] | None = None, job_label: str = "job-name",
                 timeout_s: float = 10.0) -> None:
        super().__init__()
        self.config, self.nodes, self.job_label, self.timeout_s = config, dict(nodes or {}), job_label, timeout_s
        self._k8s = kubernetes_client()
        self._api: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesActuator:
        """The ``k8s_*`` settings. Raises ``ValueError``: no client installed, or no configuration loads."""
        return cls(configure(settings.k8s_kubeconfig, settings.k8s_context), settings.k8s_nodes,
                   settings.k8s_job_label, settings.k8s_timeout_s)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_k8s": None, "_api": None}  # a connection pool and a module do not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _k8s=kubernetes_client())

    @property
    def api(self) -> Any:
        """The ``ApiClient`` (made on first use)."""
        if self._api is None:
            self._api = self._k8s.client.ApiClient(self.config)
        return self._api

    @property
    def core(self) -> Any:
        return self._k8s.client.CoreV1Api(self.api)

    @property
    def where(self) -> str:
        return f"the Kubernetes API server {self.config.host}"

    def k8s_node(self, node: str) -> str:
        """The Kubernetes Node name of opsloop's node ``node`` (``k8s_nodes``, else the same)."""
        return self.nodes.get(node, node)

    def _named(self, node: str) -> str:
        name = self.k8s_node(node)
        return name if name == node else f"{name} (opsloop's {node})"

    # --- the Actuator protocol -------------------------------------------------------------------------------
    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out, known without running anything (``None``: it can try)."""
        if isinstance(action, CordonGpu):
            return NO_GPU_CORDON.format(node=action.gpu.split("/", 1)[0])
        if action.kind not in SCHEDULER_KINDS | UNDO_KINDS:
            return (f"{action.kind} is not a scheduler action: the Kubernetes actuator carries out "
                    f"{', '.join(sorted(SCHEDULER_KINDS - {'cordon_gpu'} | UNDO_KINDS))}")
        return None

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str]:
        if isinstance(action, DrainNode):
            return await self.drain_node(action.node, approval_id)
        if isinstance(action, ResumeNode):
            return await self.uncordon_node(action.node, action.drained_by)
        assert isinstance(action, MigrateJob)  # refusal() let only these three through
        return await self.evict_job(action.job, action.avoid)

    async def undo(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Undo what ``approval_id`` did: a drain is uncordoned (:meth:`uncordon_node`); an eviction cannot be."""
        if isinstance(action, DrainNode):
            ok, detail = await self.bounded(self.uncordon_node(action.node, approval_id))
        elif isinstance(action, MigrateJob):
            ok, detail = False, f"{describe(action)} cannot be undone: the pods' restart elsewhere is the migration"
        else:
            ok, detail = False, self.refusal(action) or f"{action.kind} has no undo in Kubernetes"
        return action_result(action, action_id, approval_id, "executed" if ok else "failed", detail, traceparent)

    # --- API calls ---------------------------------------------------------------------------------------------
    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
                    view: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
        """``fn(*args, **kw)`` of the client in a thread, bounded by ``timeout_s``; ``view`` reads its answer.

        Raises:
            KubeFailure: an API error (with the server's message), no answer, or an answer that does not parse.
        """
        import urllib3  # the client's own transport

        try:
            out = await asyncio.to_thread(fn, *args, _request_timeout=timeout or self.timeout_s, **kw)
            return view(out) if view is not None else out
        except self._k8s.client.exceptions.ApiException as exc:
            said = api_error(exc)
            raise KubeFailure(f"{what}: {said}", exc.status, said) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeFailure(f"{what}: no answer from {self.where} ({type(exc).__name__}: {exc})") from None
        except (ValueError, TypeError, AttributeError) as exc:  # the answer is not the API's JSON of that object
            said = " ".join(str(exc).split())[:200]
            raise KubeFailure(f"{what}: the API server's answer does not parse ({type(exc).__name__}: "
                              f"{said})") from None

    async def read_node(self, name: str, timeout: float | None = None) -> NodeView:
        """The Node ``name`` (Kubernetes' name). Raises ``KubeFailure``."""
        view: NodeView = await self._call(f"node {name}", self.core.read_node, name, timeout=timeout,
                                          view=self._node_view)
        return view

    def _node_view(self, node: Any) -> NodeView:
        spec = node.spec
        taints = tuple(self.api.sanitize_for_serialization(t) for t in (spec.taints or ()) if spec)
        return NodeView(node.metadata.name, bool(spec and spec.unschedulable), taints,
                        str(node.metadata.resource_version))

    async def list_pods(self, what: str, timeout: float | None = None, **selectors: str) -> list[PodView]:
        """Pods of every namespace matching ``field_selector`` / ``label_selector``. Raises ``KubeFailure``."""
        pods: list[PodView] = await self._call(what, self.core.list_pod_for_all_namespaces, timeout=timeout,
                                               view=lambda out: [self._pod_view(p) for p in out.items], **selectors)
        return pods

    @staticmethod
    def _pod_view(pod: Any) -> PodView:
        meta, phase = pod.metadata, (pod.status.phase if pod.status else "") or ""
        owner = next((o.kind for o in meta.owner_references or () if o.controller), "")
        skip = ("DaemonSet" if owner == "DaemonSet" else
                "static pod" if "kubernetes.io/config.mirror" in (meta.annotations or {}) else
                "terminating already" if meta.deletion_timestamp else
                "no controller: eviction would delete it for good" if not owner
                and phase not in ("Succeeded", "Failed") else "")
        return PodView(meta.namespace, meta.name, pod.spec.node_name or "", phase, skip)

    async def evict(self, pod: PodView) -> tuple[str, str]:
        """POST ``pod``'s eviction; ``(outcome, words)``: ``evicted``, ``gone`` (404), ``held`` (429), ``failed``."""
        body = self._k8s.client.V1Eviction(api_version="policy/v1", kind="Eviction",
                                           metadata=self._k8s.client.V1ObjectMeta(name=pod.name,
                                                                                  namespace=pod.namespace))
        try:
            await self._call(f"evict {pod.label}", self.core.create_namespaced_pod_eviction, pod.name,
                             pod.namespace, body)
        except KubeFailure as exc:  # a 429 is a budget's only with its words (API priority and fairness also 429s)
            budget = exc.status == 429 and "disruption budget" in exc.said.lower()
            return "gone" if exc.status == 404 else "held" if budget else "failed", exc.said
        return "evicted", ""

    async def _evict_all(self, pods: Sequence[PodView]) -> dict[str, list[str]]:
        gate = asyncio.Semaphore(EVICTING)

        async def one(p: PodView) -> tuple[str, str]:
            async with gate:
                return await self.evict(p)

        out: dict[str, list[str]] = {"evicted": [], "gone": [], "held": [], "failed": []}
        for pod, (outcome, said) in zip(pods, await asyncio.gather(*(one(p) for p in pods)), strict=True):
            out[outcome].append(pod.label + (f" ({said})" if outcome in ("held", "failed") else ""))
        return out

    @staticmethod
    def _report(done: Mapping[str, list[str]], skipped: Sequence[PodView]) -> str:
        evicted = done["evicted"]
        parts = [f"{len(evicted)} pod(s) evicted" + (f" ({_names(evicted)})" if evicted else "")]
        if done["gone"]:
            parts.append(f"gone already: {_names(done['gone'])}")
        if done["held"]:
            parts.append(f"held by a PodDisruptionBudget, left running: {_names(done['held'], 5)}")
        if done["failed"]:
            parts.append(f"eviction failed: {_names(done['failed'], 5)}")
        if skipped:
            parts.append(f"left: {_names([f'{p.label} ({p.skip})' for p in skipped])}")
        return "; ".join(parts)

    # --- nodes -------------------------------------------------------------------------------------------------
    def _cordon_patch(self, node: NodeView, approval_id: str) -> dict[str, Any]:
        ours = {"key": TAINT_KEY, "value": approval_id, "effect": "NoSchedule"}
        taints = [t for t in node.taints if not (t.get("key") == TAINT_KEY and t.get("effect") == "NoSchedule")]
        return {"metadata": {"resourceVersion": node.resource_version},
                "spec": {"unschedulable": True, "taints": [*taints, ours]}}

    @staticmethod
    def _uncordon_patch(node: NodeView, approval_id: str) -> dict[str, Any]:
        rest = [t for t in node.taints if not (t.get("key") == TAINT_KEY and t.get("value") == approval_id)]
        return {"metadata": {"resourceVersion": node.resource_version},
                "spec": {"unschedulable": False, "taints": rest}}

    async def _patch(self, name: str, body: dict[str, Any], what: str) -> NodeView:
        view: NodeView = await self._call(what, self.core.patch_node, name, body, view=self._node_view)
        return view

    async def drain_node(self, node: str, approval_id: str) -> tuple[bool, str]:
        """Cordon and taint ``node``, then evict its pods; ``(ok, detail)``. See the module's docstring."""
        name, shown = self.k8s_node(node), self._named(node)
        before = await self.read_node(name)
        if before.unschedulable and before.tainted(approval_id):
            cordon = f"{shown} cordoned by this approval already ({before.state()}): not patched again"
        elif before.unschedulable:
            cordon = (f"{shown} was cordoned by someone else ({before.state()}): their cordon left as it is, "
                      "no opsloop taint added")
        else:
            for attempt in range(3):  # a conflict means the node changed since it was read: read it again
                try:
                    after = await self._patch(name, self._cordon_patch(before, approval_id), f"cordon {shown}")
                    break
                except KubeFailure as exc:
                    if attempt == 2 or exc.status != 409:
                        raise
                    before = await self.read_node(name)
            if not (after.unschedulable and after.tainted(approval_id)):
                return False, f"{shown}: the patch was accepted but the node reads back {after.state()}"
            cordon = f"{shown} {before.state()} → {after.state()}"
        pods = await self.list_pods(f"pods on {shown}", field_selector=f"spec.nodeName={name}")
        done = await self._evict_all([p for p in pods if not p.skip])
        return not done["failed"], f"{cordon}; {self._report(done, [p for p in pods if p.skip])}"

    async def uncordon_node(self, node: str, approval_id: str) -> tuple[bool, str]:
        """Undo :meth:`drain_node`: uncordon and remove the taint, only when it is ``approval_id``'s."""
        name, shown = self.k8s_node(node), self._named(node)
        before = await self.read_node(name)
        mine = f"{TAINT_KEY}={approval_id}:NoSchedule"
        if not before.tainted(approval_id):
            if before.unschedulable:
                return False, (f"{shown} is {before.state()}, not by {mine}: not uncordoned, that cordon is "
                               "someone else's")
            return True, f"{shown} is {before.state()}, no cordon or taint of {mine}: nothing to do"
        after = await self._patch(name, self._uncordon_patch(before, approval_id), f"uncordon {shown}")
        if after.unschedulable or after.tainted(approval_id):
            return False, f"{shown}: the patch was accepted but the node reads back {after.state()}"
        return True, (f"{shown} {before.state()} → {after.state()} (undid the drain of {mine}; evicted pods are not "
                      "brought back)")

    # --- jobs --------------------------------------------------------------------------------------------------
    def _avoided(self, avoid: Sequence[str]) -> list[str]:
        nodes: list[str] = []
        for entry in avoid:
            gpu = _GPU.match(entry)
            if gpu is None and not _NODE.match(entry):
                raise Unmovable(f"avoid: {entry!r} is neither a node nor a GPU (<node>/gpu<index>)")
            name = self.k8s_node(gpu.group(1) if gpu else entry)
            nodes += [] if name in nodes else [name]
        return nodes

    async def _job_pods(self, job: str, avoid: Sequence[str], timeout: float | None = None
                        ) -> tuple[list[str], list[PodView]]:
        """The avoided nodes, all cordoned, and the job's pods. Raises ``KubeFailure`` when it cannot be moved."""
        nodes = self._avoided(avoid)
        views = [await self.read_node(n, timeout) for n in nodes]
        if open_ := [v.name for v in views if not v.unschedulable]:
            raise Unmovable(f"{', '.join(open_)} is schedulable: a pod evicted from it could be placed there again "
                              "(Kubernetes has no per-job node exclusion opsloop can set); drain_node it first")
        selector = f"{self.job_label}={job}"
        pods = await self.list_pods(f"pods of job {job}", timeout, label_selector=selector)
        if not pods:
            raise Unmovable(f"no pods labelled {selector} (a finished job, or another name or k8s_job_label)")
        if len(spaces := sorted({p.namespace for p in pods})) > 1:
            raise Unmovable(f"pods labelled {selector} in {len(spaces)} namespaces ({', '.join(spaces)}): which "
                              "job is meant is ambiguous")
        return nodes, pods

    async def evict_job(self, job: str, avoid: Sequence[str]) -> tuple[bool, str]:
        """Evict ``job``'s pods from the ``avoid`` nodes; ``(ok, detail)``. See the module's docstring."""
        nodes, pods = await self._job_pods(job, avoid)
        off, on = ",".join(nodes), [p for p in pods if p.node in nodes]
        if not on:
            where = ",".join(sorted({p.node for p in pods if p.node})) or "no node yet"
            return True, f"job {job}: its {len(pods)} pod(s) run on {where}, none on {off}: nothing evicted"
        done = await self._evict_all([p for p in on if not p.skip])
        moved = done["evicted"] or done["gone"]
        ok = not done["failed"] and bool(moved or all(p.skip == "terminating already" for p in on))
        return ok, f"job {job} off {off}: {self._report(done, [p for p in on if p.skip])}"

    # --- what approving will run (the approval card) -----------------------------------------------------------
    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The API calls :meth:`execute` will make for ``approval_id``, after reading the node and pods as it does
        (within :data:`EFFECT_S`; an API that does not answer makes the state unknown, with why)."""
        if (refused := self.refusal(action)) is not None:
            return Effect(call=f"nothing: {refused}", where=self.where, current="n/a", new="unchanged")
        if isinstance(action, DrainNode):
            call = f"PATCH /api/v1/nodes/{self.k8s_node(action.node)} (cordon and taint), then evictions of its pods"
        elif isinstance(action, ResumeNode):
            call = (f"PATCH /api/v1/nodes/{self.k8s_node(action.node)} (uncordon, remove the taint "
                    f"{TAINT_KEY}={action.drained_by}:NoSchedule)")
        else:
            call = f"evictions (policy/v1) of the pods of {describe(action)}"
        try:
            return await asyncio.wait_for(self._effect(action, approval_id), EFFECT_S)
        except TimeoutError:
            why = f"the Kubernetes API gave no complete answer within {EFFECT_S:g} s"
        except KubeFailure as exc:
            why = str(exc)
        return Effect(call=call, where=self.where, current=f"unknown ({why})", new=new_value(action))

    async def _resume_effect(self, action: ResumeNode, t: float) -> Effect:
        name, shown = self.k8s_node(action.node), self._named(action.node)
        node, mine = await self.read_node(name, t), f"{TAINT_KEY}={action.drained_by}:NoSchedule"
        now = f"{shown} {node.state()}"
        if not node.tainted(action.drained_by):
            why = (f"{shown} is cordoned by someone else, not {mine} (it will fail, their cordon is kept)"
                   if node.unschedulable else f"{shown} has no cordon or taint of {mine} (nothing to do)")
            return Effect(call=f"nothing: {why}", where=self.where, current=now, new="unchanged")
        body = self._uncordon_patch(node, action.drained_by)
        after = NodeView(name, False, tuple(body["spec"]["taints"]), node.resource_version)
        return Effect(call=f"PATCH /api/v1/nodes/{name} (strategic merge) {json.dumps(body, separators=(',', ':'))}",
                      where=self.where, current=now,
                      new=f"{shown} {after.state()}: pods can be scheduled there again (evicted ones are not brought "
                      "back)")

    @staticmethod
    def _evictions(pods: Sequence[PodView]) -> str:
        return (f"POST /api/v1/namespaces/<ns>/pods/<pod>/eviction (policy/v1 Eviction) for "
                f"{_names([p.label for p in pods])}" if pods else "no eviction (no pod to evict)")

    async def _effect(self, action: Action, approval_id: str) -> Effect:
        t = min(self.timeout_s, EFFECT_S)
        if isinstance(action, DrainNode):
            name, shown = self.k8s_node(action.node), self._named(action.node)
            node = await self.read_node(name, t)
            pods = await self.list_pods(f"pods on {shown}", t, field_selector=f"spec.nodeName={name}")
            evict, skip = [p for p in pods if not p.skip], [f"{p.label} ({p.skip})" for p in pods if p.skip]
            if node.unschedulable:
                whose = "this approval" if node.tainted(approval_id) else "someone else: their cordon is kept"
                patch = f"no PATCH ({shown} is cordoned already, by {whose})"
            else:
                patch = (f"PATCH /api/v1/nodes/{name} (strategic merge) "
                         f"{json.dumps(self._cordon_patch(node, approval_id), separators=(',', ':'))}")
            now = f"{shown} {node.state()}; {len(pods)} pod(s) on it" + (f", left: {_names(skip)}" if skip else "")
            new = (f"{shown} cordoned, taint {TAINT_KEY}={approval_id}:NoSchedule" if not node.unschedulable
                   else f"{shown} cordoned as it is") + (
                f"; {len(evict)} pod(s) evicted unless a PodDisruptionBudget holds them (their controllers start "
                "them elsewhere)")
            return Effect(call=f"{patch}; then {self._evictions(evict)}", where=self.where, current=now, new=new)
        if isinstance(action, ResumeNode):
            return await self._resume_effect(action, t)
        assert isinstance(action, MigrateJob)
        try:
            nodes, pods = await self._job_pods(action.job, action.avoid, t)
        except Unmovable as exc:  # what the execution would refuse: it runs nothing and fails
            return Effect(call=f"nothing: {exc} (it will fail)", where=self.where, current=str(exc), new="unchanged")
        on = [p for p in pods if p.node in nodes]
        now = f"job {action.job}: " + ", ".join(f"{p.label} on {p.node or '(none)'} ({p.phase})" for p in pods[:10])
        evict = [p for p in on if not p.skip]
        if not evict:
            return Effect(call=f"nothing: no pod of job {action.job} to evict from {','.join(nodes)}",
                          where=self.where, current=now, new="unchanged")
        return Effect(call=self._evictions(evict), where=self.where, current=now,
                      new=f"{_names([p.label for p in evict])} evicted from {','.join(nodes)} unless a "
                      "PodDisruptionBudget holds them: their controller starts them on another node")


def api_error(exc: Any) -> str:
    """``<status> <reason>: <the server's message>`` of an ``ApiException`` (its Status body's ``message``, and the
    causes a PodDisruptionBudget gives)."""
    said = ""
    try:
        body = json.loads(exc.body or "")
        causes = [c.get("message", "") for c in (body.get("details") or {}).get("causes") or ()]
        said = " ".join([str(body.get("message", "")), *(c for c in causes if c)]).strip()
    except (ValueError, TypeError, AttributeError):
        said = " ".join(str(exc.body or "").split())[:200]
    return f"{exc.status} {exc.reason}" + (f": {said}" if said else "")
