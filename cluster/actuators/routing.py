"""Routing approved actions by kind: the cooling plant's (``set_cooling_setpoint``, ``set_fan_speed``) to the
facility actuator (setting ``facility``), every other to the base actuator (setting ``actuator``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cluster.actuators.modbus import FACILITY_KINDS
from cluster.telemetry.samples import ActionResult
from policies.actions import Action


class RoutedActuator:
    """An ``Actuator`` over two: idempotent by action id because each is (one kind always takes one route)."""

    #: Whether results reach the twin by themselves depends on the route: see :meth:`feeds_back_for`.
    feeds_back = False

    def __init__(self, base: Any, facility: Any, kinds: Iterable[str] = FACILITY_KINDS) -> None:
        self.base = base
        self.facility = facility
        self.kinds = frozenset(kinds)

    def route(self, action: Action) -> Any:
        """The actuator that carries ``action`` out."""
        return self.facility if action.kind in self.kinds else self.base

    def feeds_back_for(self, action: Action) -> bool:
        """True when the actuator ``action`` goes to reports its result to the twin itself (the simulator)."""
        return bool(getattr(self.route(action), "feeds_back", False))

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Hand the action to its route."""
        result: ActionResult = await self.route(action).execute(action, action_id, approval_id, traceparent)
        return result
