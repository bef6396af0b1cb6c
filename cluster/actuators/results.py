"""The one shape of an actuator's answer (:func:`action_result`) and the one way an actuator carries an action out
(:class:`BoundedActuator`).

``ts`` is 0.0 here: an actuator outside the simulator has no twin clock. The gateway stamps the result with the
twin's time when it stores it (``Execution._carry_out``), and the outcome window counts from that stamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal, NamedTuple, TypeVar

from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets

T = TypeVar("T", bound=tuple[Any, ...])

#: Bound of one whole execution, tries included, in seconds (under the gateway's 30 s bound on an execution, so the
#: result names what did not answer).
BUDGET_S = 25.0


def action_result(action: Action, action_id: str, approval_id: str, status: Literal["executed", "failed"],
                  detail: str, traceparent: str | None, previous: dict[str, float | str] | None = None
                  ) -> ActionResult:
    """The :class:`ActionResult` of ``action`` run under ``action_id`` for ``approval_id`` (``previous``: the values
    it changed, as they were before, keyed by the action's field, when the actuator read them)."""
    return ActionResult(
        ts=0.0, action_id=action_id, approval_id=approval_id, action_kind=action.kind,
        targets=tuple(action_targets(action)), status=status, detail=detail, traceparent=traceparent,
        previous=previous,
    )


class Outcome(NamedTuple):
    """What :meth:`BoundedActuator._apply` did, when it has more to say than ``(ok, detail)``: the values it changed,
    as they were before (``ActionResult.previous``: what an undo sets back)."""

    ok: bool
    detail: str
    previous: dict[str, float | str] | None = None


class BoundedActuator:
    """What every actuator of a real system does with an approved action, written once: the result already stored
    for its action id comes back as it is (the gateway resends after a crash); an action it cannot carry out
    (:meth:`refusal`) fails without anything run; the rest runs within :data:`BUDGET_S`; an executed result is
    stored. A subclass supplies :meth:`_apply`, and :meth:`refusal` where it refuses anything; :meth:`bounded` bounds
    its other calls (an undo) alike.

    Idempotent by action id within this process only; an actuator that must be idempotent across restarts marks
    what it changes with the approval id and reads it back (Slurm, Kubernetes, the ticket systems).
    """

    #: Who answers, named in the detail of an execution out of time ("Slurm gave no complete answer within 25 s").
    answers = ""
    #: What :meth:`_apply` raises for a failure whose words are the detail (:meth:`failed` words it).
    failure: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._done: dict[str, ActionResult] = {}

    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out, known without running anything (``None``: it can try)."""
        return None

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Carry ``action`` out for ``approval_id`` (idempotent by ``action_id``); a failure is a ``failed`` result
        with the reason, never an exception."""
        if action_id in self._done:
            return self._done[action_id]
        refused = self.refusal(action)
        if refused is not None:
            return action_result(action, action_id, approval_id, "failed", refused, traceparent)
        ok, detail, previous = Outcome(*await self.bounded(self._apply(action, action_id, approval_id, traceparent)))
        result = action_result(action, action_id, approval_id, "executed" if ok else "failed", detail, traceparent,
                               previous if ok else None)
        if ok:
            self._done[action_id] = result
        return result

    async def bounded(self, work: Awaitable[T]) -> T | tuple[bool, str]:
        """``work``'s ``(ok, detail)`` (or :class:`Outcome`) within :data:`BUDGET_S`; out of time or a
        :attr:`failure`: not ok, with why."""
        try:
            return await asyncio.wait_for(work, BUDGET_S)
        except TimeoutError:
            who = f"{self.answers} gave no" if self.answers else "no"
            return False, f"{who} complete answer within {BUDGET_S:g} s"
        except self.failure as exc:
            return False, self.failed(exc)

    def failed(self, exc: Exception) -> str:
        """The detail of a :attr:`failure` raised by :meth:`_apply`: its message."""
        return str(exc)

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str] | Outcome:
        """Carry out an action :meth:`refusal` let through (the arguments of :meth:`execute`): ``(ok, detail)``, or an
        :class:`Outcome` with the values before."""
        raise NotImplementedError
