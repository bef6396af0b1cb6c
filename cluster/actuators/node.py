"""Node-local actions (``set_power_limit``, ``reset_gpu``) on a Ray cluster: each runs in the actuator on the node its
target names, never anywhere else.

One :class:`NodeActuator` actor lives on every GPU node (hard node affinity: NVML only reaches the GPUs of the host it
runs on), started by :func:`start_node_actuators` when ``actuator=nvml``. A node is named as the telemetry names it
(:func:`cluster.nvml_readers.node_name`): its Ray node label ``opsloop.io/node`` (``ray start --labels
opsloop.io/node=n02``), else its host name; the label matters where several Ray nodes share a machine, and so a host
name. The gateway holds :class:`NodeActuators`, the route to them: an action whose node has no actuator (a CPU node,
an unknown one), or whose GPU or power limit that node's NVML does not offer, is refused before anyone approves it
(:meth:`NodeActuators.refusal`). Every result's detail starts with the node it ran on:
``on n02 (Ray node 1a2b3c4d5e6f): gpu3 power limit 700 -> 450 W``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.gateway.effects import Effect, new_value
from cluster.actuators.nvml import NODE_KINDS, NvmlGpus, carry_out, gpu_index, nvml_effect
from cluster.actuators.results import action_result
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, describe

#: Bound on one call to a node's actuator (under the gateway's bound on one execution, so the node is named).
NODE_TIMEOUT_S = 25.0
#: Bound on a node's actuator starting and reading its GPUs' limits.
START_TIMEOUT_S = 60.0


def _ray_node() -> str | None:
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None


class NodeActuator:
    """The actuator of one node's GPUs (an actor on that node; no decorator: :func:`start_node_actuators` applies
    ``ray.remote``); idempotent by action id.

    Args:
        node: opsloop's name of the node (the ``n02`` of ``n02/gpu3``).
        nv: The NVML module (``None``: ``pynvml``); a stub where no GPU exists.
        smi: Path of ``nvidia-smi`` for resets (``None``: on ``PATH``).

    Raises:
        RuntimeError: NVML does not load here (the actor's creation fails with the reason).
    """

    def __init__(self, node: str, nv: Any = None, smi: str | None = None) -> None:
        self.node = node
        self.ray_node = _ray_node()
        self.gpus = NvmlGpus(nv, smi)
        self.limits = self.gpus.limits()
        self._done: dict[str, ActionResult] = {}

    def inventory(self) -> dict[str, Any]:
        """The node's name, its Ray node id and each GPU's allowed power limit range (W)."""
        return {"node": self.node, "ray_node": self.ray_node, "limits_w": [list(r) for r in self.limits]}

    def where(self) -> str:
        """``on n02 (Ray node 1a2b3c4d5e6f)``: where this actuator runs."""
        return f"on {self.node}" + (f" (Ray node {self.ray_node[:12]})" if self.ray_node else "")

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Carry out a node-local action on this node's GPU; the detail starts with :meth:`where`."""
        if action_id in self._done:
            return self._done[action_id]
        if action.kind in NODE_KINDS and (node := action.gpu.split("/", 1)[0]) != self.node:  # type: ignore[union-attr]
            status, detail, previous = "failed", f"{action.gpu} is on {node}, not here", None  # type: ignore[union-attr]
        else:
            status, detail, previous = await carry_out(self.gpus, action)
        result = action_result(action, action_id, approval_id, status, f"{self.where()}: {detail}",  # type: ignore[arg-type]
                               traceparent, previous)
        if status == "executed":
            self._done[action_id] = result
        return result

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """What :meth:`execute` will run on this node's GPUs (:func:`~cluster.actuators.nvml.nvml_effect`)."""
        return await nvml_effect(self.gpus, action, self.where())


class NodeActuators:
    """The route of node-local actions: each to the actuator on the node its GPU names.

    Args:
        ports: Node name → its actuator (a ``RemotePort`` to a :class:`NodeActuator`, or one in-process).
        inventory: Node name → :meth:`NodeActuator.inventory`, for refusals known before approval.
        timeout_s: Bound on one call to a node's actuator.
    """

    def __init__(self, ports: dict[str, Any], inventory: dict[str, dict[str, Any]] | None = None,
                 timeout_s: float = NODE_TIMEOUT_S) -> None:
        self.ports = dict(sorted(ports.items()))
        self.inventory = inventory or {}
        self.timeout_s = timeout_s

    def refusal(self, action: Action) -> str | None:
        """Why no node can carry ``action`` out (``None``: its node's actuator can try): its node has no actuator,
        no such GPU, or the power limit is outside that GPU's range."""
        if action.kind not in NODE_KINDS:
            return f"{action.kind} is not a node-local action"
        gpu: str = action.gpu  # type: ignore[union-attr]
        node, index = gpu.split("/", 1)[0], gpu_index(gpu)
        if node not in self.ports:
            return (f"no actuator runs on node {node}: {' and '.join(NODE_KINDS)} run only in the actuator of a GPU "
                    f"node of the Ray cluster, on that node (actuators on: {', '.join(self.ports) or 'none'})")
        limits = self.inventory.get(node, {}).get("limits_w")
        if limits is None:
            return None
        if index >= len(limits):
            return f"node {node} has {len(limits)} GPU(s); there is no gpu{index}"
        lo, hi = limits[index]
        if action.kind == "set_power_limit" and not lo <= action.watts <= hi:
            return (f"{gpu} takes power limits of {lo:.0f}-{hi:.0f} W (NVML's constraints); "
                    f"{action.watts:g} W is outside")
        return None

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Hand the action to its node's actuator; refused or unreachable: a failed result naming the node."""
        if why := self.refusal(action):
            return action_result(action, action_id, approval_id, "failed", why, traceparent)
        node = action.gpu.split("/", 1)[0]  # type: ignore[union-attr]
        try:
            result: ActionResult = await asyncio.wait_for(
                self.ports[node].execute(action, action_id, approval_id, traceparent), self.timeout_s)
            return result
        except TimeoutError:
            why = f"the actuator on {node} gave no answer within {self.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - a lost node's actor: the result names it, the gateway records it
            why = f"the actuator on {node} is unreachable: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return action_result(action, action_id, approval_id, "failed", why, traceparent)

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """What approving ``action`` will run, as the actuator on its GPU's node states it; refused or unreachable:
        nothing, and the effect says why."""
        if why := self.refusal(action):
            return Effect(call=f"nothing: {why}", where="the node actuators", current="n/a", new="unchanged")
        node = action.gpu.split("/", 1)[0]  # type: ignore[union-attr]
        try:
            effect: Effect = await asyncio.wait_for(self.ports[node].effect(action, approval_id), self.timeout_s)
            return effect
        except TimeoutError:
            why = f"the actuator on {node} gave no answer within {self.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - a lost node's actor: the card says so, the approval is not lost
            why = f"the actuator on {node} is unreachable: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return Effect(call=describe(action), where=f"the actuator on {node}", current=f"unknown ({why})",
                      new=new_value(action))


def start_node_actuators(namespace: str, timeout_s: float = START_TIMEOUT_S, nv: Any = None,
                         smi: str | None = None) -> NodeActuators:
    """One :class:`NodeActuator` on every GPU node of the Ray cluster, each asked for its GPUs once.

    Args:
        namespace: The Ray namespace of the actors (``actuator-<node>``).
        timeout_s: Bound on one node's actuator starting.
        nv: The NVML module the actuators use (``None``: ``pynvml``; a stub in tests).
        smi: Path of ``nvidia-smi`` on the nodes.

    Raises:
        ValueError: no GPU node, two with one name, or a node where NVML does not load (the message names it).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.remote import RemotePort
    from cluster.nvml_readers import gpu_nodes

    nodes = gpu_nodes()
    if not nodes:
        raise ValueError("actuator=nvml: no node of the Ray cluster has a GPU (Ray lists no GPU resource); "
                         "use --actuator dry-run or webhook on a cluster without GPUs")
    ports: dict[str, Any] = {}
    inventory: dict[str, dict[str, Any]] = {}
    for n in nodes:
        actor: Any = ray.remote(NodeActuator).options(
            name=f"actuator-{n['host']}", namespace=namespace, num_cpus=0.01, get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["node_id"], soft=False),
        ).remote(n["host"], nv, smi)
        try:
            inventory[n["host"]] = ray.get(actor.inventory.remote(), timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - the actor's creation error carries NVML's reason
            ray.kill(actor)
            raise ValueError(f"actuator=nvml: the actuator on {n['host']} did not start: "
                             f"{str(exc).strip().splitlines()[-1][:300]}") from None
        ports[n["host"]] = RemotePort(actor)
    return NodeActuators(ports, inventory)
