"""Samples: what a telemetry source says about the fleet at one instant.

This is also the JSON Lines trace format (one object a line; ``kind`` defaults to ``gpu``). An
``ActionResult`` is a sample too: feedback from the actuators enters the twin exactly like telemetry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from policies.actions import NodeName, UnitName


class _Sample(BaseModel):
    # NaN and infinities are refused at the door, like any other out-of-range value.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    ts: float = Field(ge=0, description="Seconds (monotonic within a source); the twin's only clock.")


class GpuSample(_Sample):
    """One GPU's sensed state (NVML or DCGM field names mapped to these)."""

    kind: Literal["gpu"] = "gpu"
    node: NodeName
    gpu: int = Field(ge=0, le=255)
    temp_c: float = Field(ge=-20, le=150, description="Sensed die temperature (lags the true one).")
    model: str = "H100-SXM"
    power_w: float | None = Field(None, ge=0, le=2000)
    power_limit_w: float | None = Field(None, ge=0, le=2000)
    sm_clock_mhz: float | None = Field(None, ge=0, le=5000)
    util: float | None = Field(None, ge=0, le=1)
    mem_temp_c: float | None = Field(None, ge=-20, le=150)
    throttle_reasons: tuple[str, ...] = ()
    xid: int | None = Field(None, ge=0)

    @property
    def name(self) -> str:
        return f"{self.node}/gpu{self.gpu}"


class CoolingSample(_Sample):
    """A cooling unit (CDU or CRAH): coolant supply/return temperature and fan speed."""

    kind: Literal["cooling"]
    unit: UnitName
    supply_c: float = Field(ge=-10, le=100)
    return_c: float | None = Field(None, ge=-10, le=120)
    setpoint_c: float | None = Field(None, ge=-10, le=100)
    fan_pct: float | None = Field(None, ge=0, le=100)
    flow_frac: dict[str, float] | None = Field(
        None, description="Coolant flow to each node it serves, as a fraction of nominal (sensed by flow meters)."
    )
    serves: tuple[NodeName, ...] = ()


class LinkSample(_Sample):
    """A network link's achieved bandwidth."""

    kind: Literal["link"]
    link: str = Field(min_length=1, max_length=64)
    type: Literal["nvlink", "pcie", "ib"]
    bandwidth_gbps: float = Field(ge=0)
    errors: int | None = Field(None, ge=0)


class JobSample(_Sample):
    """A job's step time; its GPUs step in lockstep."""

    kind: Literal["job"]
    job: str = Field(min_length=1, max_length=64)
    gpus: tuple[str, ...]
    step_ms: float = Field(gt=0)


class ActionResult(_Sample):
    """What an actuator did with an approved action; re-enters the twin as a sample."""

    kind: Literal["action_result"] = "action_result"
    action_id: str = Field(min_length=1, max_length=128)
    approval_id: str = Field(min_length=1, max_length=128)
    action_kind: str
    targets: tuple[str, ...] = ()
    status: Literal["executed", "failed", "rejected"]  # rejected: an operator said no (detail: the reason)
    detail: str = ""
    traceparent: str | None = None


Sample = Annotated[
    GpuSample | CoolingSample | LinkSample | JobSample | ActionResult, Field(discriminator="kind")
]
SAMPLE_ADAPTER: TypeAdapter[Sample] = TypeAdapter(Sample)


def parse_sample(data: dict[str, Any]) -> Sample:
    """Validate one trace record; ``kind`` defaults to ``gpu``.

    Raises:
        pydantic.ValidationError: a field is missing, of the wrong type, NaN or out of range.
    """
    if isinstance(data, dict) and "kind" not in data:
        data = {**data, "kind": "gpu"}
    return SAMPLE_ADAPTER.validate_python(data)


class TelemetrySource(Protocol):
    """Anything that yields samples: NVML, a DCGM scrape, a replayed trace, the simulator."""

    async def read(self) -> list[Sample]:
        """Return the samples that arrived since the last call (possibly none)."""
        ...


def source_position(source: Any) -> Any:
    """Where a resumable source is (its ``position()``, which its ``seek()`` takes back), else None.

    A replayed trace and the feedback stream can be resumed; a live source (NVML, DCGM, the simulator actor,
    which keeps its own state) cannot, and need not: it reads what is there now.
    """
    get = getattr(source, "position", None)
    return get() if callable(get) else None
