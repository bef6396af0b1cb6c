"""Proposals: what the agent asks the humans (and the policy) to do about an incident.

Ids are derived from content (incident id, revision, action), so a restarted agent that handles the
same events again produces the same proposal ids, and the gateway treats the repeat as a no-op.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from actors.agent.incidents import RootCause
from knowledge.limits import Bound
from policies.actions import Action, action_hash


class Cited(BaseModel):
    """A runbook step a proposed action rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    doc_id: str
    step_id: str | None
    title: str


class Prediction(BaseModel):
    """The what-if effect an action should have, checked against the twin after execution.

    ``metric`` names a field of the twin's snapshot (a GPU field such as ``sensed_c``, optionally with a ``max_``
    prefix over every GPU of a node, or a cooling unit field such as ``supply_c``); ``subject`` names a GPU,
    node, unit or ``fleet``; the observed value must end up below ``below`` and/or above ``above`` within
    ``within_s`` seconds of twin time after execution.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(min_length=1, max_length=64)
    subject: str = Field(min_length=1, max_length=64)
    below: float | None = None
    above: float | None = None
    within_s: float = Field(gt=0, le=86400)
    text: str = Field("", max_length=300)  # the prediction in an operator's words
    settles_at: float | None = None  # where the metric settles with the action
    without_action: float | None = None  # where it would settle without it
    # What else the action does (actors.agent.whatif): the die's settled temperature with it minus without it, and
    # the facility (chiller, pumps, fans) of the incident's hottest node, with it and its change, and the PUE.
    die_change_c: float | None = None
    facility_kw: float | None = None
    facility_kw_change: float | None = None
    pue: float | None = None
    pue_change: float | None = None

    @property
    def checkable(self) -> bool:
        """Whether there is a bound to hold the observed effect to."""
        return self.below is not None or self.above is not None


class ProposedAction(BaseModel):
    """One catalogue action with its citations and the reason for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: str
    action: Action
    citations: tuple[Cited, ...]
    rationale: str
    prediction: Prediction | None = None  # what-if: the twin's physics run forward with this action
    bounds: dict[str, Bound] = Field(default_factory=dict)  # each number's range from the cited step (and hardware)


class Proposal(BaseModel):
    """The agent's verified answer to one incident revision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    proposal_id: str
    incident_id: str
    ts: float
    root_cause: RootCause
    diagnosis: str
    actions: tuple[ProposedAction, ...]
    source: Literal["llm", "fallback"]
    verified: bool
    problems: tuple[str, ...] = ()
    confidence: float = Field(ge=0, le=1)
    event_ids: tuple[str, ...] = ()
    traceparent: str | None = None
    emergency: bool = False  # the shutdown temperature is predicted: emergency-class actions run at once


def proposal_id(incident_id: str, revision: int) -> str:
    return "pr-" + hashlib.sha256(f"{incident_id}|{revision}".encode()).hexdigest()[:12]


def action_id(proposal: str, index: int, action: Action) -> str:
    return "act-" + hashlib.sha256(f"{proposal}|{index}|{action_hash(action)}".encode()).hexdigest()[:12]
