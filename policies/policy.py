"""Approval policy: for each action, run by itself (``auto``), wait for approvers (``approve``), or ``deny``.

Pure: every answer is computed from the action, the policy file and values the caller passes in (a clock
value, the recent executions of a kind, the fleet's size) — no IO, no clock of its own.

- **Default deny**: an action kind the policy names neither by kind nor by risk never runs.
- **Emergency class**: a proposal flagged ``emergency`` (shutdown temperature predicted) whose action kind is
  listed under ``emergency.kinds`` runs at once and operators are notified.
- **Blast radius** (``max_per_hour``, ``max_fleet_frac``) and **change windows** (``windows``) are checked by
  :meth:`Policy.gate` right before execution, against what already ran.
- **Expiry**: a pending approval expires after ``expiry_s`` (the rule's, else the file's) and counts as denied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.actions import ACTION_KINDS, RISK, TARGET_FIELDS, Action, Risk, action_targets

Mode = Literal["auto", "approve", "deny"]
Role = Literal["viewer", "operator", "approver", "admin"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_POLICY = Path(__file__).with_name("default.yaml")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")


class Window(BaseModel):
    """A change window in UTC: on ``days``, from ``start`` (inclusive) to ``end`` (exclusive), HH:MM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: tuple[Day, ...] = DAYS  # type: ignore[assignment]
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r} is not HH:MM")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start >= self.end:
            raise ValueError(f"window start {self.start} must be before its end {self.end}")
        return self

    def contains(self, now: float) -> bool:
        """Whether the epoch second ``now`` falls inside this window."""
        t = datetime.fromtimestamp(now, UTC)
        hhmm = f"{t.hour:02d}:{t.minute:02d}"
        return DAYS[t.weekday()] in self.days and self.start <= hhmm < self.end

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start}-{self.end} UTC"


class Rule(BaseModel):
    """What the policy says about one action kind (or one risk level)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    approvers: int = Field(1, ge=1, le=5, description="Distinct approvers needed (mode approve).")
    roles: tuple[Role, ...] = Field(("approver", "admin"), min_length=1, description="Roles that may approve.")
    expiry_s: float | None = Field(None, gt=0, description="Pending expiry for this kind (default: the file's).")
    windows: tuple[Window, ...] = Field((), description="Change windows; empty means any time.")
    max_per_hour: int | None = Field(None, ge=0, description="Most distinct targets executed in a rolling hour.")
    max_fleet_frac: float | None = Field(
        None, gt=0, le=1, description="Most fraction of the fleet's targets of this kind acted on in fleet_window_s."
    )
    fleet_window_s: float = Field(86400, gt=0, description="How long an executed action counts for max_fleet_frac.")


class Emergency(BaseModel):
    """Kinds that run at once when the agent flags a proposal as an emergency (shutdown predicted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: tuple[str, ...] = ()
    notify: bool = True
    bypass_windows: bool = Field(True, description="An emergency does not wait for a change window.")


class Verdict(BaseModel):
    """The policy's answer for one action, with the reason shown to operators."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    approvers: int = 0
    roles: tuple[str, ...] = ("approver", "admin")
    expiry_s: float | None = None
    emergency: bool = False
    reason: str


class Executed(BaseModel):
    """One past execution of a kind, as the blast-radius check needs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float
    target: str


class Policy(BaseModel):
    """A validated policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    default: Literal["deny"] = "deny"
    expiry_s: float = Field(3600, gt=0)
    rules: dict[str, Rule] = Field(default_factory=dict)
    risks: dict[Risk, Rule] = Field(default_factory=dict, description="Rules by risk for kinds not named in rules.")
    emergency: Emergency = Field(default_factory=Emergency)

    @model_validator(mode="after")
    def _known_kinds(self) -> Policy:
        unknown = sorted((set(self.rules) | set(self.emergency.kinds)) - set(ACTION_KINDS))
        if unknown:
            raise ValueError(f"rules name unknown action kinds: {', '.join(unknown)}")
        return self

    def rule_for(self, kind: str) -> Rule | None:
        """The kind's own rule, else its risk level's, else None (deny)."""
        rule = self.rules.get(kind)
        if rule is None and kind in RISK:
            rule = self.risks.get(RISK[kind])
        return rule

    def evaluate(self, action: Action, emergency: bool = False) -> Verdict:
        """The verdict for one action (default deny); ``emergency`` is the proposal's flag."""
        rule = self.rule_for(action.kind)
        if emergency and action.kind in self.emergency.kinds:
            return Verdict(mode="auto", emergency=True,
                           reason=f"{action.kind}: emergency thermal step-down, runs at once (operators notified)")
        if rule is None:
            return Verdict(mode="deny", reason=f"{action.kind}: not allowed by policy (default deny)")
        if rule.mode == "approve":
            n = rule.approvers
            return Verdict(mode="approve", approvers=n, roles=rule.roles, expiry_s=rule.expiry_s or self.expiry_s,
                           reason=f"{action.kind}: needs {n} approver{'s' * (n > 1)} ({'/'.join(rule.roles)})")
        if rule.mode == "auto":
            return Verdict(mode="auto", reason=f"{action.kind}: runs by itself (low risk)")
        return Verdict(mode="deny", reason=f"{action.kind}: forbidden by policy")

    def gate(
        self,
        action: Action,
        now: float,
        executed: Sequence[Executed] = (),
        fleet: Mapping[str, int] | None = None,
        emergency: bool = False,
    ) -> str | None:
        """Why this action may not execute right now, or None when it may.

        Args:
            action: the approved action.
            now: epoch seconds (the caller's clock value).
            executed: past executions of the same kind (any age; the window is applied here).
            fleet: how many targets of each type the fleet has (``gpu``, ``node``, ``unit``...).
            emergency: an emergency verdict bypasses change windows when the policy says so.
        """
        rule = self.rule_for(action.kind)
        if rule is None:
            return None if emergency and action.kind in self.emergency.kinds else f"{action.kind}: denied by policy"
        if rule.windows and not (emergency and self.emergency.bypass_windows):
            if not any(w.contains(now) for w in rule.windows):
                allowed = "; ".join(w.describe() for w in rule.windows)
                return f"{action.kind}: outside its change window ({allowed}); decide again inside it"
        targets = set(action_targets(action))
        if rule.max_per_hour is not None:
            recent = {e.target for e in executed if e.ts > now - 3600} | targets
            if len(recent) > rule.max_per_hour:
                return (f"{action.kind}: blast radius, at most {rule.max_per_hour} target(s) per hour "
                        f"(this would make {len(recent)})")
        if rule.max_fleet_frac is not None:
            field = TARGET_FIELDS[action.kind][0] if TARGET_FIELDS[action.kind] else ""
            size = (fleet or {}).get(field)
            if not size:
                return f"{action.kind}: blast radius limit set but the fleet's {field or 'target'} count is unknown"
            acted = {e.target for e in executed if e.ts > now - rule.fleet_window_s} | targets
            if len(acted) / size > rule.max_fleet_frac:
                return (f"{action.kind}: blast radius, at most {rule.max_fleet_frac:.0%} of the fleet's {size} "
                        f"{field}s (this would make {len(acted)})")
        return None


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the problem."""


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate a policy file (the bundled default when ``path`` is None).

    Raises:
        PolicyError: the file cannot be read, is not YAML, or does not validate.
    """
    path = path or DEFAULT_POLICY
    try:
        data = yaml.safe_load(path.read_text())
        return Policy.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
