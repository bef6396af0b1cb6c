"""The typed action catalogue: everything opsloop may ever propose or execute.

Every action is a frozen pydantic model with a ``kind`` literal; ``Action`` is the discriminated union.
Parameters carry their own bounds, so a model (or a forged request) cannot smuggle an out-of-range value
past validation. GPUs are named ``<node>/gpu<index>`` (``n01/gpu3``).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

#: A host name as the fleet names it: a DNS name (RFC 1123 labels of letters, digits and inner hyphens, joined
#: by dots, at most 253 characters: ``n01``, ``DGX-01``, ``ip-10-0-1-23.ec2.internal``). No spaces, slashes
#: or control characters, so a GPU's name ``<node>/gpu<index>`` still splits at its one slash.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
NODE_PATTERN = rf"{_LABEL}(?:\.{_LABEL})*"
NodeName = Annotated[str, StringConstraints(pattern=rf"^{NODE_PATTERN}$", max_length=253)]
GpuName = Annotated[str, StringConstraints(pattern=rf"^{NODE_PATTERN}/gpu[0-9]{{1,3}}$", max_length=253 + 7)]
UnitName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
LinkName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9/._-]{0,63}$")]
JobName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
FreeText = Annotated[str, StringConstraints(min_length=1, max_length=500)]
#: An approval's id as the gateway makes it (``ap-`` and 12 hex digits).
ApprovalRef = Annotated[str, StringConstraints(pattern=r"^ap-[0-9a-f]{12}$")]


class Risk(StrEnum):
    """How much harm a wrong execution can do; the policy maps risk to an approval rule."""

    low = "low"
    medium = "medium"
    high = "high"


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SetPowerLimit(_Action):
    """Cap one GPU's board power (W); the GPU's DVFS controller steps its clock down to meet it."""

    kind: Literal["set_power_limit"] = "set_power_limit"
    gpu: GpuName
    watts: float = Field(ge=100.0, le=1000.0)


class SetCoolingSetpoint(_Action):
    """Change a cooling unit's coolant supply temperature setpoint (°C)."""

    kind: Literal["set_cooling_setpoint"] = "set_cooling_setpoint"
    unit: UnitName
    supply_c: float = Field(ge=12.0, le=40.0)


class SetFanSpeed(_Action):
    """Set a cooling unit's fan (or pump) speed in percent."""

    kind: Literal["set_fan_speed"] = "set_fan_speed"
    unit: UnitName
    percent: float = Field(ge=20.0, le=100.0)


class DrainNode(_Action):
    """Stop scheduling onto a node and let its jobs finish or move."""

    kind: Literal["drain_node"] = "drain_node"
    node: NodeName


class ResumeNode(_Action):
    """Return a node drained by opsloop to scheduling: the undo of the executed ``drain_node`` approval
    ``drained_by``, and only of that drain (a drain someone else set is theirs to lift)."""

    kind: Literal["resume_node"] = "resume_node"
    node: NodeName
    drained_by: ApprovalRef


class CordonGpu(_Action):
    """Take one GPU out of scheduling."""

    kind: Literal["cordon_gpu"] = "cordon_gpu"
    gpu: GpuName


class ResetGpu(_Action):
    """Reset one GPU (kills what runs on it)."""

    kind: Literal["reset_gpu"] = "reset_gpu"
    gpu: GpuName


class MigrateJob(_Action):
    """Move a job off the named nodes or GPUs."""

    kind: Literal["migrate_job"] = "migrate_job"
    job: JobName
    avoid: tuple[str, ...] = Field(min_length=1, max_length=64)


class DisableLink(_Action):
    """Take a network link out of service so traffic routes around it."""

    kind: Literal["disable_link"] = "disable_link"
    link: LinkName


class OpenTicket(_Action):
    """Open a ticket for people to follow up."""

    kind: Literal["open_ticket"] = "open_ticket"
    summary: FreeText
    severity: Literal["low", "medium", "high", "critical"]


class Notify(_Action):
    """Tell the on-call operators something; changes nothing in the data center."""

    kind: Literal["notify"] = "notify"
    message: FreeText


Action = Annotated[
    SetPowerLimit
    | SetCoolingSetpoint
    | SetFanSpeed
    | DrainNode
    | ResumeNode
    | CordonGpu
    | ResetGpu
    | MigrateJob
    | DisableLink
    | OpenTicket
    | Notify,
    Field(discriminator="kind"),
]

ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)

#: Risk of each action kind. The policy decides what a risk level means for approval.
RISK: dict[str, Risk] = {
    "notify": Risk.low,
    "open_ticket": Risk.low,
    "set_fan_speed": Risk.medium,
    "set_cooling_setpoint": Risk.medium,
    "set_power_limit": Risk.medium,
    "cordon_gpu": Risk.medium,
    "migrate_job": Risk.high,
    "drain_node": Risk.high,
    "resume_node": Risk.medium,
    "reset_gpu": Risk.high,
    "disable_link": Risk.high,
}

ACTION_KINDS: tuple[str, ...] = tuple(RISK)

#: The fields of each kind that name something in the fleet (checked against the twin's topology).
TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "set_power_limit": ("gpu",),
    "set_cooling_setpoint": ("unit",),
    "set_fan_speed": ("unit",),
    "drain_node": ("node",),
    "resume_node": ("node",),
    "cordon_gpu": ("gpu",),
    "reset_gpu": ("gpu",),
    "migrate_job": ("job",),
    "disable_link": ("link",),
    "open_ticket": (),
    "notify": (),
}


def parse_action(data: object) -> Action:
    """Validate a mapping (or JSON string) into one catalogue action.

    Raises:
        pydantic.ValidationError: the kind is unknown or a parameter is missing or out of bounds.
    """
    if isinstance(data, str | bytes):
        return ACTION_ADAPTER.validate_json(data)
    return ACTION_ADAPTER.validate_python(data)


def action_targets(action: Action) -> list[str]:
    """Names of the fleet objects an action touches (empty for notify/open_ticket)."""
    return [str(getattr(action, f)) for f in TARGET_FIELDS[action.kind]]


def action_hash(action: Action) -> str:
    """A stable hash of the exact action; an approval binds to it, so an edited action needs a new one."""
    canonical = json.dumps(action.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe(action: Action) -> str:
    """One human line for an action, as dashboards, Slack and the CLI show it."""
    params = {k: v for k, v in action.model_dump(mode="json").items() if k != "kind"}
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{action.kind}({inner})"
