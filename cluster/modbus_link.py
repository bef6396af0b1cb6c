"""Reading and writing single registers of Modbus TCP servers with ``pymodbus``'s asyncio client.

One connection per server, opened on first use and again after a failure (pymodbus's own reconnecting is off:
the caller decides when to try again). A failure is a :class:`ModbusFailure` saying why: ``transient`` when the
server could not be reached or did not answer (worth another try), not when it answered with a Modbus exception
(an address it does not have, a value it refuses).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from cluster.modbus_map import Endpoint, Point

#: Modbus exception codes (the protocol's own) → what they mean.
EXCEPTION_CODES = {1: "illegal function", 2: "illegal data address (no such register)", 3: "illegal data value",
                   4: "device failure", 5: "acknowledge", 6: "device busy", 10: "gateway path unavailable",
                   11: "gateway target failed to respond"}


class ModbusFailure(RuntimeError):
    """A register could not be read or written; the message says why."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


class ModbusLink:
    """Single-register reads and writes on any number of Modbus TCP servers.

    Args:
        timeout_s: Bound of one connect and of one request.
    """

    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[Endpoint, AsyncModbusTcpClient] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (into a Ray actor): connections are opened again where it lands."""
        return {**self.__dict__, "_clients": {}}

    async def _client(self, ep: Endpoint) -> AsyncModbusTcpClient:
        client = self._clients.get(ep)
        if client is not None and client.connected:
            return client
        if client is not None:
            client.close()
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=self.timeout_s, retries=0, reconnect_delay=0)
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s + 1)
        except (OSError, TimeoutError, ModbusException):
            ok = False
        if not ok:
            client.close()
            raise ModbusFailure(f"{ep}: no connection (refused, unreachable or no answer within "
                                f"{self.timeout_s:g} s)", transient=True)
        self._clients[ep] = client
        return client

    async def _call(self, ep: Endpoint, what: str, request: Any) -> Any:
        """Run one request; a lost connection is dropped (the next call connects again)."""
        try:
            resp = await asyncio.wait_for(request, self.timeout_s + 1)
        except (ModbusException, OSError, TimeoutError) as exc:
            self.drop(ep)
            raise ModbusFailure(f"{ep}: {what}: no answer ({type(exc).__name__}: {exc})".rstrip(": "),
                                transient=True) from None
        if resp.isError():
            code = getattr(resp, "exception_code", None)
            raise ModbusFailure(f"{ep}: {what}: the device refused: {EXCEPTION_CODES.get(code or 0, 'error')} "
                                f"(Modbus exception {code})", transient=False)
        return resp

    async def read(self, ep: Endpoint, device_id: int, point: Point) -> float:
        """The point's value (its register, decoded)."""
        client = await self._client(ep)
        reader = client.read_holding_registers if point.table == "holding" else client.read_input_registers
        resp = await self._call(ep, f"reading register {point.ref} of device {device_id}",
                                reader(point.offset, count=1, device_id=device_id))
        if len(resp.registers) != 1:
            raise ModbusFailure(f"{ep}: register {point.ref}: {len(resp.registers)} values for one",
                                transient=False)
        return point.decode(resp.registers[0])

    async def write(self, ep: Endpoint, device_id: int, point: Point, value: float) -> None:
        """Write the point's holding register (``value`` encoded at its scale).

        Raises:
            ValueError: the value does not fit the register (nothing is sent).
            ModbusFailure: the server could not be reached or refused.
        """
        raw = point.encode(value)
        client = await self._client(ep)
        await self._call(ep, f"writing register {point.ref} of device {device_id}",
                         client.write_register(point.offset, raw, device_id=device_id))

    def drop(self, ep: Endpoint) -> None:
        """Close the connection to one server (the next call opens a new one)."""
        client = self._clients.pop(ep, None)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close every connection."""
        for ep in list(self._clients):
            self.drop(ep)
