"""The Modbus actuator: ``set_cooling_setpoint`` and ``set_fan_speed`` on a cooling plant's units, through the
holding registers the register map (setting ``modbus_map``, :mod:`cluster.modbus_map`) names.

Each execution reads the register first (the detail records the value before), writes the new value, and reads
it back to confirm: ``cu01 supply setpoint 25.0 → 21.0 °C, register 40001 on 127.0.0.1:5020``. A unit outside
the map, a unit that maps no such register, a value that does not fit it, a device that refuses or reads back
something else, and a server that cannot be reached (after one more try) are ``failed`` results with the
reason; another action kind, a unit outside the map and a unit without the register are known without a read, so
they are refused before anyone approves them (:meth:`ModbusActuator.refusal`). Idempotent by action id; writing an
absolute value twice is harmless besides, so a retry after a lost answer does no harm either.
Before approval, :meth:`ModbusActuator.effect` states the write (register, raw value) and reads the register's value
now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from actors.gateway.effects import Effect
from cluster.actuators.results import BoundedActuator, Outcome
from cluster.modbus_link import ModbusFailure, ModbusLink
from cluster.modbus_map import POINTS, WRITES, ModbusUnit, Point, unit_endpoint
from policies.actions import Action, SetCoolingSetpoint, SetFanSpeed

if TYPE_CHECKING:
    from cluster.settings import Settings

#: The action kinds a facility actuator carries out.
FACILITY_KINDS = frozenset(WRITES)
#: Wait before the one retry of a transient failure, in seconds.
RETRY_AFTER_S = 0.5
#: Bound of one connect and of one request when reading a register for an approval card (under the gateway's 5 s).
PEEK_TIMEOUT_S = 1.0


def setting(action: SetCoolingSetpoint | SetFanSpeed) -> tuple[str, float]:
    """The field a facility action sets and its new value (``("supply_c", 21.0)``): the key of the value before in
    ``ActionResult.previous``."""
    return ("supply_c", action.supply_c) if isinstance(action, SetCoolingSetpoint) else ("percent", action.percent)


class ModbusActuator(BoundedActuator):
    """Setpoints and fan speeds over Modbus TCP.

    Args:
        units: The register map: unit name → its registers.
        endpoint: ``HOST[:PORT]`` of the server of every unit that names none of its own.
        timeout_s: Bound of one connect and of one request.
        retry_after_s: Wait before the one retry of a transient failure.
    """

    def __init__(self, units: Mapping[str, ModbusUnit], endpoint: str | None = None, timeout_s: float = 3.0,
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        super().__init__()
        self.units = dict(units)
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s
        self.link = ModbusLink(timeout_s)
        self.peek = ModbusLink(min(timeout_s, PEEK_TIMEOUT_S))  # the cards' reads, on connections of their own

    @classmethod
    def from_settings(cls, settings: Settings) -> ModbusActuator:
        """The ``modbus_*`` settings."""
        return cls(settings.modbus_map, settings.modbus_endpoint, settings.modbus_timeout_s)

    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out, known from the register map alone (``None``: it can try):
        another kind than a facility action's, a unit outside the map, a unit that maps no register for it."""
        if not isinstance(action, SetCoolingSetpoint | SetFanSpeed):
            return (f"{action.kind} is not a facility action: the Modbus actuator only carries out "
                    f"{' and '.join(sorted(WRITES))}")
        field, what = WRITES[action.kind]
        unit = self.units.get(action.unit)
        if unit is None:
            names = sorted(self.units)
            known = ", ".join(names[:10]) + (f" … ({len(names)} in all)" if len(names) > 10 else "") or "none"
            return f"unit {action.unit} is not in the Modbus register map (modbus_map maps: {known})"
        if getattr(unit, field) is None:
            return f"{action.unit}: the Modbus register map gives no {field} register for its {what}"
        return None

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str] | Outcome:
        """Read, write, read back; ok only when the register holds the new value (and the value before with it)."""
        assert isinstance(action, SetCoolingSetpoint | SetFanSpeed)  # refusal() let only these through
        field, what = WRITES[action.kind]
        name = action.unit
        key, value = setting(action)
        unit = self.units[name]
        point: Point = getattr(unit, field)
        try:
            ep = unit_endpoint(unit, self.endpoint)
            point.encode(value)
        except ValueError as exc:
            return False, f"{name} {what}: {exc}"
        where, sym = f"register {point.ref} on {ep}", POINTS[field]
        before: float | None = None
        for attempt in (1, 2):
            try:
                now = await self.link.read(ep, unit.device_id, point)
                before = now if before is None else before
                await self.link.write(ep, unit.device_id, point, value)
                after = await self.link.read(ep, unit.device_id, point)
            except ModbusFailure as exc:
                if exc.transient and attempt == 1:
                    await asyncio.sleep(self.retry_after_s)
                    continue
                tried = " (after one retry)" if attempt == 2 else ""
                return False, f"{name} {what} not set to {point.show(value)} {sym}: {exc}{tried}"
            break
        was = point.show(before) if before is not None else "?"
        if after != point.decode(point.encode(value)):
            return False, (f"{name} {what}: wrote {point.show(value)} {sym} to {where} but it reads back "
                           f"{point.show(after)} {sym} (was {was}; the controller kept its own limit?)")
        return Outcome(True, f"{name} {what} {was} → {point.show(after)} {sym}, {where}",
                       {key: before} if before is not None else None)

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The register write :meth:`execute` will make, with the register's value now (read within
        :data:`PEEK_TIMEOUT_S`; a server that does not answer makes it unknown, with why). An action it will refuse
        (another kind, a unit or register the map lacks, a value the register cannot hold) runs nothing."""
        if not isinstance(action, SetCoolingSetpoint | SetFanSpeed):
            return Effect(call=f"nothing: {action.kind} is not a facility action, the Modbus actuator refuses it",
                          where="Modbus", current="n/a", new="unchanged")
        field, what = WRITES[action.kind]
        key, value = setting(action)
        unit = self.units.get(action.unit)
        point: Point | None = getattr(unit, field) if unit is not None else None
        try:
            if unit is None or point is None:
                raise ValueError(f"the Modbus register map gives {action.unit} no {field} register")
            ep = unit_endpoint(unit, self.endpoint)
            raw = point.encode(value)
        except ValueError as exc:
            return Effect(call=f"nothing: the Modbus actuator refuses it ({exc})", where="Modbus (modbus_map)",
                          current="n/a", new="unchanged")
        sym = POINTS[field]
        reading: dict[str, float | str] | None = None
        try:
            now = await self.peek.read(ep, unit.device_id, point)
            current, reading = f"{point.show(now)} {sym} (register {point.ref} read now)", {key: now}
        except ModbusFailure as exc:
            current = f"unknown ({exc})"
        return Effect(call=f"write holding register {point.ref} = {raw} ({point.show(value)} {sym}), read it back",
                      where=f"Modbus TCP {ep} device {unit.device_id} ({action.unit} {what})", current=current,
                      new=f"{point.show(value)} {sym}", reading=reading)
