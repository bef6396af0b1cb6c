"""Routing approved actions by kind, one backend per kind of target: the cooling plant's (``set_cooling_setpoint``,
``set_fan_speed``) to the facility actuator (setting ``facility``), the workload manager's (``drain_node``,
``cordon_gpu``, ``migrate_job``, and ``resume_node``, a drain's undo) to the scheduler actuator (setting
``scheduler``), ``open_ticket`` to the ticket system (setting ``tickets``), ``notify`` to the paging service
(setting ``paging``), every other to the base actuator (setting ``actuator``). With ``actuator=nvml`` on a Ray
cluster the node-local ones (``set_power_limit``, ``reset_gpu``) go to the actuator on their target's node
(``node.py``). A kind with a route goes there only: never to the base actuator instead."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actors.gateway.effects import Effect
from cluster.actuators.modbus import FACILITY_KINDS
from cluster.actuators.nvml import NODE_KINDS
from cluster.actuators.paging import PAGING_KINDS
from cluster.actuators.slurm import SCHEDULER_KINDS, UNDO_KINDS
from cluster.actuators.tickets import TICKET_KINDS
from cluster.telemetry.samples import ActionResult
from policies.actions import Action


class RoutedActuator:
    """An ``Actuator`` over several: idempotent by action id because each is (one kind always takes one route).

    Args:
        base: Takes every action no other route takes.
        facility: Takes ``kinds`` (``None``: no facility route).
        kinds: The facility's action kinds.
        scheduler: Takes ``scheduler_kinds`` (``None``: no scheduler route), once for the whole cluster.
        scheduler_kinds: The scheduler's action kinds.
        nodes: Takes ``node_kinds``, each on its target's node (a ``NodeActuators``; ``None``: no node route).
        node_kinds: The node-local action kinds.
        tickets: Takes ``open_ticket`` (setting ``tickets``; ``None``: no ticket route).
        paging: Takes ``notify`` (setting ``paging``; ``None``: no paging route).
    """

    #: Whether results reach the twin by themselves depends on the route: see :meth:`feeds_back_for`.
    feeds_back = False

    def __init__(self, base: Any, facility: Any = None, kinds: Iterable[str] = FACILITY_KINDS, *,
                 scheduler: Any = None, scheduler_kinds: Iterable[str] = SCHEDULER_KINDS | UNDO_KINDS,
                 nodes: Any = None, node_kinds: Iterable[str] = NODE_KINDS, tickets: Any = None,
                 paging: Any = None) -> None:
        self.base = base
        self.facility = facility
        self.scheduler = scheduler
        self.kinds = frozenset(kinds)
        self.routes: dict[str, Any] = {}
        for actuator, its_kinds in ((facility, self.kinds), (scheduler, frozenset(scheduler_kinds)),
                                    (nodes, frozenset(node_kinds)), (tickets, TICKET_KINDS), (paging, PAGING_KINDS)):
            if actuator is not None:
                taken = its_kinds & set(self.routes)
                if taken:
                    raise ValueError(f"two actuators for {', '.join(sorted(taken))}")
                self.routes.update(dict.fromkeys(its_kinds, actuator))

    def route(self, action: Action) -> Any:
        """The actuator that carries ``action`` out."""
        return self.routes.get(action.kind, self.base)

    def feeds_back_for(self, action: Action) -> bool:
        """True when the actuator ``action`` goes to reports its result to the twin itself (the simulator)."""
        return bool(getattr(self.route(action), "feeds_back", False))

    def refusal(self, action: Action) -> str | None:
        """Why ``action``'s route cannot carry it out, known without running anything (``None``: it can try);
        asked of the route's actuator when it says (the Slurm one refuses ``cordon_gpu``)."""
        refuses = getattr(self.route(action), "refusal", None)
        return refuses(action) if callable(refuses) else None

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Hand the action to its route."""
        result: ActionResult = await self.route(action).execute(action, action_id, approval_id, traceparent)
        return result

    async def effect(self, action: Action, approval_id: str) -> Effect | None:
        """What ``action``'s route will run, as that actuator states it (``None``: it does not)."""
        states = getattr(self.route(action), "effect", None)
        return await states(action, approval_id) if callable(states) else None
