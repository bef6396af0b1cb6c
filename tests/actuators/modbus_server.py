"""The cooling plant's side of the Modbus actuator and source in tests: ``pymodbus``'s own Modbus TCP server on
127.0.0.1, run on the test's event loop, as a CDU controller with one unit (device 1).

Its register layout is :data:`PLANT` (Modicon references → raw 16-bit values); a reference outside the 16
holding (40001-40016) and 16 input (30001-30016) registers it has is an illegal address to it. :func:`plant_map`
is the register map the settings take for it.
"""

from __future__ import annotations

from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cluster.modbus_map import register_table
from tests.helpers import free_port

SETPOINT, FAN, SUPPLY, RETURN, FLOW = 40001, 40002, 30001, 30002, 30003
#: The unit's state at start: setpoint 25.0 °C, fan 60 %, supply 24.3 °C, return 30.1 °C, flow 120.0 l/min.
PLANT = {SETPOINT: 250, FAN: 60, SUPPLY: 243, RETURN: 301, FLOW: 1200}
REGISTERS = 16
DEVICE = 1


def plant_map(endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
    """The register map of the plant's unit ``cu01`` (``endpoint``: its own; ``extra``: more of its entries)."""
    tenths = {"scale": 0.1}
    unit = {"device_id": DEVICE, "supply_c": {"register": SUPPLY, **tenths}, "return_c": {"register": RETURN, **tenths},
            "setpoint_c": {"register": SETPOINT, **tenths}, "fan_pct": FAN,
            "flow_lpm": {"register": FLOW, "signed": False, **tenths}, "rated_flow_lpm": 150.0,
            "serves": ["n01", "n02"], **({"endpoint": endpoint} if endpoint else {}), **extra}
    return {"cu01": unit}


class ModbusPlant:
    """A pymodbus ``ModbusTcpServer`` (async context manager); ``get``/``set`` read and change its registers the
    way the device itself would (not over the network)."""

    def __init__(self, values: dict[int, int] | None = None, port: int | None = None) -> None:
        self.values = {**PLANT, **(values or {})}
        self.port = port or free_port()
        self.server: ModbusTcpServer | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _block(self, table: str) -> list[SimData]:
        regs = [0] * REGISTERS
        for ref, raw in self.values.items():
            t, offset = register_table(ref)
            if t == table:
                regs[offset] = raw
        return [SimData(0, values=regs, datatype=DataType.REGISTERS)]

    async def start(self) -> ModbusPlant:
        bits = [SimData(0, values=False, datatype=DataType.BITS)]  # coils, discrete inputs: unused
        device = SimDevice(id=DEVICE, simdata=(bits, bits, self._block("holding"), self._block("input")))
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def __aenter__(self) -> ModbusPlant:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def get(self, ref: int) -> int:
        """A register's raw value, as the device holds it."""
        assert self.server is not None
        table, offset = register_table(ref)
        return int((await self.server.async_getValues(DEVICE, 3 if table == "holding" else 4, offset, 1))[0])

    async def set(self, ref: int, raw: int) -> None:
        """Change a register on the device's side (its sensor moved)."""
        assert self.server is not None
        table, offset = register_table(ref)
        await self.server.async_setValues(DEVICE, 6 if table == "holding" else 4, offset, [raw])
