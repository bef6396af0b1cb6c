"""Modbus source: a cooling plant's units read over Modbus TCP (``pymodbus``), as cooling-unit samples.

The registers are those of the register map (setting ``modbus_map``, :mod:`cluster.modbus_map`), the same ones
the Modbus actuator writes, so a setpoint it sets shows in the next read. Each read polls every unit that maps a
supply temperature: one :class:`CoolingSample` (``supply_c``, and ``return_c``, ``setpoint_c``, ``fan_pct`` where
mapped; ``flow_frac`` for each node it ``serves`` when ``flow_lpm`` and ``rated_flow_lpm`` are mapped) and, where
``flow_lpm`` is mapped, a :class:`FacilitySample` of the unit with its flow, as the Redfish source reads a CDU.

**Failures.** A server that cannot be reached or does not answer has missed a poll: ``lost_after`` misses in a
row are a ``SourceStatus`` (``ok=False``, source ``modbus``, host ``HOST:PORT``) that the twin makes
``telemetry_lost``; its first answer after is ``telemetry_restored``. A register the device refuses (an address
it does not have) is recorded in ``errors`` under the unit: an optional reading is left out, never taken as 0;
without its supply temperature the unit gives no sample. Samples carry the source's clock (Unix seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from cluster.modbus_link import ModbusFailure, ModbusLink
from cluster.modbus_map import POINTS, Endpoint, ModbusUnit, unit_endpoint
from cluster.telemetry.liveness import Liveness
from cluster.telemetry.redfish_resources import build
from cluster.telemetry.samples import CoolingSample, FacilitySample, Sample, SourceStatus


class ModbusSource:
    """``TelemetrySource`` over the units of a Modbus register map (every server polled at once per read).

    Args:
        units: Unit name → its registers; those without ``supply_c`` are not read.
        endpoint: ``HOST[:PORT]`` of the server of every unit that names none of its own.
        timeout_s: Bound of one connect and of one request.
        lost_after: Missed polls in a row after which a server is ``telemetry_lost``.
        clock: Unix seconds; every sample of a read carries one reading of it.

    Raises:
        ValueError: no unit maps a supply temperature, or a unit has no endpoint.
    """

    def __init__(self, units: Mapping[str, ModbusUnit], endpoint: str | None = None, timeout_s: float = 3.0,
                 lost_after: int = 3, clock: Callable[[], float] = time.time) -> None:
        self.units = {name: u for name, u in sorted(units.items()) if u.supply_c is not None}
        if not self.units:
            raise ValueError("the modbus source needs a unit whose supply_c register is mapped (modbus_map)")
        self.servers: dict[Endpoint, list[str]] = {}
        for name, unit in self.units.items():
            self.servers.setdefault(unit_endpoint(unit, endpoint), []).append(name)
        self.link = ModbusLink(timeout_s)
        self.liveness = Liveness(lost_after)
        self.clock = clock
        self.errors: dict[str, str] = {}  # per server (HOST:PORT) or unit: why its last poll missed or fell short

    async def aclose(self) -> None:
        """Close the connections."""
        await self.link.aclose()

    async def read(self) -> list[Sample]:
        """One poll of every server; one that does not answer is recorded (and counted), never raised."""
        ts = round(self.clock(), 3)
        polls = await asyncio.gather(*(self._poll(ep, names, ts) for ep, names in self.servers.items()))
        out: list[Sample] = []
        for ep, got in zip(self.servers, polls, strict=True):
            host = str(ep)
            if isinstance(got, str):
                self.errors[host] = got
                if (n := self.liveness.missed(host)) is not None:
                    out.append(SourceStatus(ts=ts, source="modbus", host=host, ok=False, missed=n,
                                            url=f"modbus://{host}", error=got[:500]))
                continue
            self.errors.pop(host, None)
            if self.liveness.seen(host):
                out.append(SourceStatus(ts=ts, source="modbus", host=host, ok=True, url=f"modbus://{host}"))
            out += got
        return out

    async def _poll(self, ep: Endpoint, names: list[str], ts: float) -> list[Sample] | str:
        """One server's samples, or why it missed the poll (units read one after another on one connection)."""
        out: list[Sample] = []
        for name in names:
            try:
                fields, problems = await self._read_unit(ep, self.units[name])
            except ModbusFailure as exc:  # only transient failures get here: the server is gone
                return str(exc)
            out += self._samples(name, ep, fields, problems, ts)
            if problems:
                self.errors[name] = "; ".join(problems)[:2000]
            else:
                self.errors.pop(name, None)
        return out

    async def _read_unit(self, ep: Endpoint, unit: ModbusUnit) -> tuple[dict[str, float | None], list[str]]:
        """The unit's mapped readings; a register the device refuses is None (and a problem)."""
        fields: dict[str, float | None] = {}
        problems: list[str] = []
        for field in POINTS:
            point = getattr(unit, field)
            if point is None:
                continue
            try:
                fields[field] = await self.link.read(ep, unit.device_id, point)
            except ModbusFailure as exc:
                if exc.transient:
                    raise
                fields[field] = None
                problems.append(f"{field}: {exc}")
        return fields, problems

    def _samples(self, name: str, ep: Endpoint, fields: dict[str, Any], problems: list[str], ts: float
                 ) -> list[Sample]:
        unit = self.units[name]
        if fields.get("supply_c") is None:
            problems.append(f"{name}: no supply temperature")
            return []
        flow = fields.pop("flow_lpm", None)
        frac = flow / unit.rated_flow_lpm if flow is not None and unit.rated_flow_lpm else None
        cooling = build(CoolingSample, {
            "kind": "cooling", "ts": ts, "unit": name, **fields, "serves": unit.serves,
            "flow_frac": {n: round(frac, 4) for n in unit.serves} if frac is not None and unit.serves else None,
        }, problems)
        facility = None
        if flow is not None:
            facility = build(FacilitySample, {"ts": ts, "source": str(ep), "unit": name, "flow_lpm": flow}, problems)
        return [s for s in (cooling, facility) if s is not None]
