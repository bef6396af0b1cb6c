"""Samples: what a telemetry source says about the fleet at one instant.

This is also the JSON Lines trace format (one object a line; ``kind`` defaults to ``gpu``). An
``ActionResult`` is a sample too: feedback from the actuators enters the twin exactly like telemetry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic_core import PydanticCustomError

from policies.actions import NodeName, UnitName

#: The stuck-sensor rule, shared by the validator (cluster.telemetry.quality.FlatRun) and the twin's detector
#: (actors.twin.signals): a power swing of STUCK_POWER_MOVE_W moves a die by ≥ 3 °C (datacenter GPUs run at
#: ≥ 0.05 °C/W), several steps of a whole-degree sensor; so does a clock swing of STUCK_CLOCK_MOVE_MHZ; and the
#: sensor (τ ≈ 15 s) has followed STUCK_SETTLE_S after the swing. A reading that stays flat through that is stuck.
STUCK_POWER_MOVE_W = 60.0
STUCK_CLOCK_MOVE_MHZ = 300.0
STUCK_SETTLE_S = 60.0


class _Sample(BaseModel):
    # NaN and infinities are refused at the door, like any other out-of-range value.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    ts: float = Field(ge=0, description="Seconds (monotonic within a source); the twin's only clock.")


class GpuSample(_Sample):
    """One GPU's sensed state (NVML or DCGM field names mapped to these).

    Every reading but the GPU's identity may be missing (``None``): a field the GPU does not support or that
    came blank (DCGM's blank sentinels, NaN) is left out by the validator, never taken as 0. A sample with no
    temperature still carries its power, clocks and XID (a GPU that fell off the bus reports only an XID).
    """

    kind: Literal["gpu"] = "gpu"
    node: NodeName
    gpu: int = Field(ge=0, le=255)
    temp_c: float | None = Field(None, ge=-20, le=150, description="Sensed die temperature (lags the true one).")
    model: str = Field("H100-SXM", min_length=1, max_length=128, description="As NVML/DCGM print it, or a profile.")
    power_w: float | None = Field(None, ge=0, le=2000)
    power_limit_w: float | None = Field(None, ge=0, le=2000)
    sm_clock_mhz: float | None = Field(None, ge=0, le=5000)
    util: float | None = Field(None, ge=0, le=1)
    mem_temp_c: float | None = Field(None, ge=-20, le=150)
    throttle_reasons: tuple[str, ...] = ()
    xid: int | None = Field(None, ge=0, description="The last XID the source saw (DCGM keeps it: it repeats).")
    xid_total: int | None = Field(None, ge=0, description="XIDs the source has counted, where it counts them.")

    @model_validator(mode="after")
    def _some_reading(self) -> GpuSample:
        if all(getattr(self, f) in (None, ()) for f in GPU_READINGS):
            raise PydanticCustomError("missing", "a GPU sample needs at least one reading (temp_c, power_w, ...)")
        return self

    @property
    def name(self) -> str:
        return f"{self.node}/gpu{self.gpu}"


#: The readings of a GPU sample: each may be missing (or quarantined by the validator) on its own.
GPU_READINGS = ("temp_c", "mem_temp_c", "power_w", "power_limit_w", "sm_clock_mhz", "util", "throttle_reasons", "xid",
                "xid_total")


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
