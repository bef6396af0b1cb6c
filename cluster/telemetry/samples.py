"""Samples: what a telemetry source says about the fleet at one instant.

This is also the JSON Lines trace format (one object a line; ``kind`` defaults to ``gpu``). An
``ActionResult`` is a sample too: feedback from the actuators enters the twin exactly like telemetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator
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


@dataclass(frozen=True, eq=False)
class GpuRoster:
    """Which GPUs a column batch speaks of, row by row: built once by a source that reports a whole fleet.

    The twin resolves a roster to its own GPU indices once and recognises the same roster object again
    (``eq=False``: identity), so a tick of 100k GPUs costs array work only, no name lookups.
    """

    nodes: tuple[str, ...]
    gpus: tuple[int, ...]
    models: tuple[str, ...]
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not len(self.nodes) == len(self.gpus) == len(self.models):
            raise ValueError(f"roster: {len(self.nodes)} nodes, {len(self.gpus)} gpus and {len(self.models)} models "
                             "must be one per row")
        names = tuple(f"{n}/gpu{g}" for n, g in zip(self.nodes, self.gpus, strict=True))
        if len(set(names)) != len(names):
            raise ValueError("roster: a GPU appears twice (a batch holds at most one reading per GPU)")
        object.__setattr__(self, "names", names)

    def __len__(self) -> int:
        return len(self.names)


#: Where each GPU reading's column lives and its valid range (as GpuSample's fields; NaN means missing).
_COLUMN_RANGES = {"temp_c": (-20.0, 150.0), "power_w": (0.0, 2000.0), "power_limit_w": (0.0, 2000.0),
                  "sm_clock_mhz": (0.0, 5000.0)}


@dataclass(frozen=True, eq=False)
class GpuColumns:
    """One round of GPU readings as arrays, row ``k`` being GPU ``roster.names[k]``: the columnar form of a
    list of :class:`GpuSample` (at most one per GPU), which the twin folds with numpy alone.

    A missing float reading is NaN and a missing XID is -1 (never 0, which DCGM uses for "no XID yet").
    Throttle reasons are small codes into ``reason_sets``, each a distinct tuple of reasons exactly as the
    source gave them (order kept), so columns say what the samples said and ``from_samples`` loses nothing.
    ``util`` and ``mem_temp_c`` are not carried: the twin does not read them.
    """

    roster: GpuRoster
    ts: np.ndarray
    temp_c: np.ndarray
    power_w: np.ndarray
    power_limit_w: np.ndarray
    sm_clock_mhz: np.ndarray
    reasons: np.ndarray  # int codes into reason_sets
    xid: np.ndarray  # int64, -1 missing
    xid_total: np.ndarray  # int64, -1 missing
    reason_sets: tuple[tuple[str, ...], ...] = ((),)

    def __post_init__(self) -> None:
        n = len(self.roster)
        for name in ("ts", *_COLUMN_RANGES, "reasons", "xid", "xid_total"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != (n,):
                raise ValueError(f"columns: {name} must be an array of {n} rows (one per roster GPU)")
        if not (np.isfinite(self.ts).all() and (self.ts >= 0).all()):
            raise ValueError("columns: ts must be finite and >= 0")
        for name, (lo, hi) in _COLUMN_RANGES.items():
            a = getattr(self, name)
            if ((a < lo) | (a > hi) | np.isinf(a)).any():
                raise ValueError(f"columns: {name} outside [{lo}, {hi}] (NaN, not a number out of range, is missing)")
        for name in ("reasons", "xid", "xid_total"):
            if getattr(self, name).dtype.kind not in "iu":
                raise ValueError(f"columns: {name} must be integers")
        if n and (self.reasons.min() < 0 or self.reasons.max() >= len(self.reason_sets)):
            raise ValueError(f"columns: reason codes must index reason_sets ({len(self.reason_sets)} sets)")
        if n and (self.xid.min() < -1 or self.xid_total.min() < -1):
            raise ValueError("columns: xid and xid_total are >= 0, or -1 when missing")

    def __len__(self) -> int:
        return len(self.roster)

    @classmethod
    def from_samples(cls, samples: Sequence[GpuSample]) -> GpuColumns:
        """The same readings as columns (the twin's list path goes through here: one fold for both)."""
        roster = GpuRoster(tuple(s.node for s in samples), tuple(s.gpu for s in samples),
                           tuple(s.model for s in samples))
        codes: dict[tuple[str, ...], int] = {(): 0}
        reasons = np.fromiter((codes.setdefault(s.throttle_reasons, len(codes)) for s in samples), np.int64,
                              len(samples))
        nan = float("nan")
        col = lambda f: np.array([nan if (v := getattr(s, f)) is None else v for s in samples], float)  # noqa: E731
        icol = lambda f: np.array([-1 if (v := getattr(s, f)) is None else v for s in samples], np.int64)  # noqa: E731
        return cls(roster, np.array([s.ts for s in samples], float), col("temp_c"), col("power_w"),
                   col("power_limit_w"), col("sm_clock_mhz"), reasons, icol("xid"), icol("xid_total"),
                   tuple(codes))


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


#: A leak detector's state: the worse of its Redfish ``DetectorState`` and ``Status.Health``.
LeakState = Literal["OK", "Warning", "Critical"]
_Key = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class FacilitySample(_Sample):
    """What a BMC or CDU says (Redfish) about one chassis or cooling unit: leak detectors, temperatures, fans, power.

    It belongs to a node (a server's BMC) or to a cooling unit (a CDU), never both; which one is
    :mod:`cluster.telemetry.redfish`'s documented naming. A leak detector that is not ``OK`` is a leak: the twin
    raises ``coolant_leak`` on the node or unit (:mod:`actors.twin.facility`).
    """

    kind: Literal["facility"] = "facility"
    node: NodeName | None = None
    unit: UnitName | None = None
    source: str = Field(min_length=1, max_length=300, description="The BMC or CDU it was read from (its name).")
    chassis: str = Field("", max_length=128, description="The Redfish chassis or cooling unit Id.")
    leaks: dict[_Key, LeakState] = Field(default_factory=dict, description="Leak detector Id → its state.")
    temps_c: dict[_Key, Annotated[float, Field(ge=-40, le=150)]] = Field(default_factory=dict)
    fans_pct: dict[_Key, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)
    fans_rpm: dict[_Key, Annotated[float, Field(ge=0, le=100_000)]] = Field(default_factory=dict)
    power_w: float | None = Field(None, ge=0, le=1_000_000, description="The chassis' power draw.")
    flow_lpm: float | None = Field(None, ge=0, le=100_000, description="A CDU's coolant flow, litres per minute.")

    @model_validator(mode="after")
    def _one_owner(self) -> FacilitySample:
        if (self.node is None) == (self.unit is None):
            raise PydanticCustomError("owner", "a facility sample names a node or a unit (exactly one)")
        return self

    @property
    def subject(self) -> str:
        return str(self.node or self.unit)


class LinkSample(_Sample):
    """A network link's achieved bandwidth and, where the port reports them, its health counters and training.

    Counters are as the port keeps them (InfiniBand's PerfMgr names; an NVLink's CRC and down counters map to
    the same two), cumulative since they were last cleared; the twin takes their rise between readings.
    """

    kind: Literal["link"]
    link: str = Field(min_length=1, max_length=64)
    type: Literal["nvlink", "pcie", "ib"]
    bandwidth_gbps: float = Field(ge=0)
    errors: int | None = Field(None, ge=0)
    symbol_errors: int | None = Field(None, ge=0, description="SymbolErrorCounter: lane symbol errors so far.")
    downed: int | None = Field(None, ge=0, description="LinkDownedCounter: times the link went down so far.")
    width: int | None = Field(None, ge=0, le=64, description="Lanes the port trained at (4 for 4X).")
    width_nominal: int | None = Field(None, ge=1, le=64, description="Lanes the port and cable support.")
    lane_gbps: float | None = Field(None, ge=0, description="Signalling rate it trained at, per lane (NDR: 100).")
    lane_gbps_nominal: float | None = Field(None, gt=0, description="The rate the port and cable support.")


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
    # What the action changed, as it was before, keyed by the action's field ({"watts": 700.0}), when the actuator
    # read it; None (and absent from older records): not known. An undo sets it back (actors.gateway.undo).
    previous: dict[str, float | str] | None = None


class SourceStatus(_Sample):
    """A scrape target that stopped answering (``ok=False``, after ``missed`` scrapes in a row) or came back.

    Live sources send one on each transition only (see :class:`cluster.telemetry.liveness.Liveness`); the twin
    makes it ``telemetry_lost`` / ``telemetry_restored`` naming ``host`` (an exporter's host, a BMC, or a GPU
    ``node/gpuN`` that vanished from its host's page).
    """

    kind: Literal["source_status"] = "source_status"
    source: str = Field(min_length=1, max_length=32, description="dcgm, prometheus, redfish, nvml ...")
    host: str = Field(min_length=1, max_length=300, description="The target: host[:port], BMC, or node/gpuN.")
    ok: bool
    missed: int = Field(0, ge=0, description="Scrapes missed in a row when it was declared lost.")
    url: str = Field("", max_length=2000)
    error: str = Field("", max_length=500, description="Why the last scrape failed.")


class LlmEngineSample(_Sample):
    """One vLLM replica's engine metrics at one instant (its engines' counters summed, the fullest KV cache).

    Counters (``*_total``, the TTFT histogram's ``_sum``/``_count``) are as the replica reports them since it
    started; the twin takes rates between one replica's readings, never across replicas.
    """

    kind: Literal["llm_engine"] = "llm_engine"
    deployment: str = Field(min_length=1, max_length=128, description="The LLM deployment (or server) served.")
    replica: str = Field(min_length=1, max_length=128, description="Which replica of it (Serve id, or host:port).")
    kv_cache_usage: float = Field(0.0, ge=0, le=1, description="KV-cache use, 0-1 (vllm:kv_cache_usage_perc).")
    running: float = Field(0.0, ge=0)
    waiting: float = Field(0.0, ge=0)
    preemptions_total: float = Field(0.0, ge=0)
    generation_tokens_total: float = Field(0.0, ge=0)
    prompt_tokens_total: float = Field(0.0, ge=0)
    ttft_sum_s: float = Field(0.0, ge=0, description="Time to first token: the histogram's sum, seconds.")
    ttft_count: float = Field(0.0, ge=0)


class AlertSample(_Sample):
    """An alert of the operator's own monitoring (Alertmanager, through ``POST /api/alerts/alertmanager``).

    ``ts`` is when opsloop received it (Unix seconds); ``starts_at`` / ``ends_at`` are the alert's own times. The
    node comes from the labels ``node``, ``Hostname`` or ``instance`` (without its port), the GPU from ``gpu``
    (:mod:`cluster.telemetry.alerts`); the twin makes it ``alert_firing`` / ``alert_resolved`` on that subject.
    """

    kind: Literal["alert"] = "alert"
    alertname: str = Field(min_length=1, max_length=256)
    status: Literal["firing", "resolved"]
    severity: str | None = Field(None, max_length=64, description="The alert's severity label, lower-cased.")
    node: NodeName | None = None
    gpu: int | None = Field(None, ge=0, le=255, description="The GPU index its gpu label names, on its node.")
    labels: dict[str, Annotated[str, StringConstraints(max_length=1024)]] = Field(default_factory=dict, max_length=64)
    starts_at: float = Field(description="Unix seconds when the alert started firing.")
    ends_at: float | None = Field(None, description="Unix seconds when it resolved (None while it fires).")
    fingerprint: str = Field(min_length=1, max_length=64, description="Alertmanager's id of the alert's labels.")
    summary: str = Field("", max_length=1024, description="Its summary (or description) annotation.")

    @property
    def subject(self) -> str:
        """The GPU (``node/gpuN``) or node the labels name, else the alert's name."""
        if self.node is not None and self.gpu is not None:
            return f"{self.node}/gpu{self.gpu}"
        return self.node or self.alertname


Sample = Annotated[
    GpuSample | CoolingSample | LinkSample | JobSample | ActionResult | SourceStatus | LlmEngineSample | FacilitySample
    | AlertSample,
    Field(discriminator="kind"),
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
