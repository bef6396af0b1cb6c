"""The cooling plant's Modbus register map (setting ``modbus_map``): which registers of which Modbus TCP server hold
each cooling unit's readings and setpoints, and how a register's 16 bits become a value. Pure: no IO.

**Registers** are written as Modicon references, as vendors' register tables print them: ``40001`` is holding
register 0 (``400001``-``465536`` for offsets past 9998), ``30001`` is input register 0 (read-only;
``300001``-``365536``). A point is a reference alone (``40001``) or ``{register: 40001, scale: 0.1, signed: true}``:
the value is the register (a signed 16-bit integer unless ``signed: false``) times ``scale`` (0.1: the device
counts tenths of a degree).

**A unit** (the key is the unit's name, as the twin and the actions name it: ``cu01``) maps any of
``supply_c``, ``return_c``, ``setpoint_c`` (supply setpoint, °C), ``fan_pct`` (%) and ``flow_lpm`` (coolant flow,
litres per minute); ``setpoint_c`` and ``fan_pct`` must be holding registers (``set_cooling_setpoint`` and
``set_fan_speed`` write them). Optional: ``endpoint`` (``HOST[:PORT]``, else the setting ``modbus_endpoint``),
``device_id`` (the Modbus unit id, default 1), ``serves`` (the nodes it cools) and ``rated_flow_lpm`` (with
``flow_lpm`` and ``serves``: each node's flow as a fraction of nominal). A unit without ``supply_c`` is acted on
but not read as telemetry. Example (YAML)::

    cu01:
      endpoint: 10.0.0.40:502
      supply_c: {register: 30001, scale: 0.1}
      setpoint_c: {register: 40001, scale: 0.1}
      fan_pct: 40002
      flow_lpm: {register: 30003, scale: 0.1, signed: false}
      rated_flow_lpm: 150
      serves: [n01, n02]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.actions import NodeName, UnitName

MODBUS_PORT = 502
#: Modicon reference ranges → (table, first reference): five-digit and six-digit forms.
_RANGES: tuple[tuple[int, int, Literal["holding", "input"]], ...] = (
    (40001, 49999, "holding"), (400001, 465536, "holding"), (30001, 39999, "input"), (300001, 365536, "input"))
#: The readings of a unit, by the sample field each fills, with their unit for messages.
POINTS = {"supply_c": "°C", "return_c": "°C", "setpoint_c": "°C", "fan_pct": "%", "flow_lpm": "l/min"}
#: The points an action writes: action kind → (the point, what it is called).
WRITES = {"set_cooling_setpoint": ("setpoint_c", "supply setpoint"), "set_fan_speed": ("fan_pct", "fan speed")}


class Endpoint(NamedTuple):
    """A Modbus TCP server's address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` (port 502 when absent).

    Raises:
        ValueError: no host, or a port that is not a number in 1-65535.
    """
    text = text.strip()
    host, port = text, str(MODBUS_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (rest or port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("a Modbus endpoint is HOST or HOST:PORT (port 1-65535)")
    return Endpoint(host, int(port))


def register_table(ref: int) -> tuple[Literal["holding", "input"], int]:
    """A Modicon reference → its table and 0-based offset (40001 → holding 0).

    Raises:
        ValueError: a number in no reference range (a bare offset such as 0 is ambiguous, so refused).
    """
    for lo, hi, table in _RANGES:
        if lo <= ref <= hi:
            return table, ref - lo
    raise ValueError("a register is a Modicon reference: 40001-49999 or 400001-465536 for a holding register, "
                     "30001-39999 or 300001-365536 for an input register (40001 is holding register 0)")


class Point(BaseModel):
    """One register and how its 16 bits read as a value: ``register × scale``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    ref: int = Field(alias="register",
                     description="Modicon reference (40001: holding register 0; 30001: input register 0).")
    scale: float = Field(1.0, gt=0, description="Engineering units per count (0.1: the device counts tenths).")
    signed: bool = Field(True, description="The register is a signed 16-bit integer (else unsigned).")

    def __repr_args__(self) -> Any:
        return [("register" if k == "ref" else k, v) for k, v in super().__repr_args__()]  # as the map writes it

    @model_validator(mode="before")
    @classmethod
    def _bare_reference(cls, v: Any) -> Any:
        return {"register": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("ref", mode="after")
    @classmethod
    def _reference(cls, v: int) -> int:
        register_table(v)
        return v

    @property
    def table(self) -> Literal["holding", "input"]:
        return register_table(self.ref)[0]

    @property
    def offset(self) -> int:
        return register_table(self.ref)[1]

    @property
    def decimals(self) -> int:
        """Decimals worth showing: as many as one count of the register has."""
        return max(0, math.ceil(-math.log10(self.scale) - 1e-9))

    def decode(self, raw: int) -> float:
        """The register's 16 bits → the value."""
        if self.signed and raw >= 0x8000:
            raw -= 0x10000
        return round(raw * self.scale, self.decimals + 3)

    def encode(self, value: float) -> int:
        """The value → the register's 16 bits (rounded to the nearest count).

        Raises:
            ValueError: the value does not fit the register at this scale.
        """
        counts = round(value / self.scale)
        lo, hi = (-0x8000, 0x7FFF) if self.signed else (0, 0xFFFF)
        if not lo <= counts <= hi:
            raise ValueError(f"{value:g} is {counts} counts at scale {self.scale:g}: outside the register's "
                             f"{lo}..{hi}")
        return counts & 0xFFFF

    def show(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


class ModbusUnit(BaseModel):
    """One cooling unit's registers (see the module's docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str | None = Field(None, description="HOST[:PORT] of its Modbus TCP server (else modbus_endpoint).")
    device_id: int = Field(1, ge=0, le=255, description="The Modbus unit id the server answers for it.")
    supply_c: Point | None = None
    return_c: Point | None = None
    setpoint_c: Point | None = None
    fan_pct: Point | None = None
    flow_lpm: Point | None = None
    rated_flow_lpm: float | None = Field(None, gt=0, description="Nominal flow: flow_frac = flow_lpm / this.")
    serves: tuple[NodeName, ...] = ()

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v not in (None, ())]  # `config show`: what is set

    @field_validator("endpoint", mode="after")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else str(parse_endpoint(v))

    @model_validator(mode="after")
    def _writable(self) -> ModbusUnit:
        for name in ("setpoint_c", "fan_pct"):
            point = getattr(self, name)
            if point is not None and point.table != "holding":
                raise ValueError(f"{name} is written by an action: it must be a holding register (4xxxx), "
                                 f"not {point.ref}")
        return self


PlantMap = dict[Annotated[str, UnitName], ModbusUnit]


def load_map(value: Any) -> Any:
    """The setting's value as a mapping: a mapping as it is, or a string holding YAML/JSON or naming such a file.

    Raises:
        ValueError: a string that is neither a mapping nor a readable file holding one (the value is not quoted:
            the settings' errors never echo input).
    """
    if not isinstance(value, str):
        return value
    path = Path(value).expanduser()
    try:
        is_file = "\n" not in value and not value.lstrip().startswith("{") and path.is_file()
    except OSError:  # a name too long to be a file's
        is_file = False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8") if is_file else value)
    except yaml.YAMLError:
        raise ValueError(f"{'the file' if is_file else 'the text'} is not valid YAML/JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("neither a YAML/JSON mapping of unit name → its registers nor a file holding one")
    return data


def unit_endpoint(unit: ModbusUnit, default: str | None) -> Endpoint:
    """Where a unit's registers are served.

    Raises:
        ValueError: neither the unit nor the setting names an endpoint.
    """
    text = unit.endpoint or default
    if not text:
        raise ValueError("no endpoint: set modbus_endpoint (--modbus-endpoint HOST:PORT) or the unit's endpoint")
    return parse_endpoint(text)
