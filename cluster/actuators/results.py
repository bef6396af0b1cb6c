"""The one shape of an actuator's answer: what ran (or failed), on which targets, with the operator-readable detail.

``ts`` is 0.0 here: an actuator outside the simulator has no twin clock. The gateway stamps the result with the
twin's time when it stores it (``Execution._carry_out``), and the outcome window counts from that stamp.
"""

from __future__ import annotations

from typing import Literal

from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets


def action_result(action: Action, action_id: str, approval_id: str, status: Literal["executed", "failed"],
                  detail: str, traceparent: str | None) -> ActionResult:
    """The :class:`ActionResult` of ``action`` run under ``action_id`` for ``approval_id``."""
    return ActionResult(
        ts=0.0, action_id=action_id, approval_id=approval_id, action_kind=action.kind,
        targets=tuple(action_targets(action)), status=status, detail=detail, traceparent=traceparent,
    )
