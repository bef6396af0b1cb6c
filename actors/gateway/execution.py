"""Carrying out approved actions and closing the loop: run, resume after a crash, and the feedback that re-enters
the twin as ``ActionResult`` samples (an actuator's result, an operator's "no", a missed outcome).

Time: an ``ActionResult`` is on the twin's clock. The simulator stamps its results itself; an actuator outside it
does not know the twin's time and leaves ``ts`` 0, and the gateway stamps the result with the twin's time (its
snapshot's ``ts``) when it stores it, a rejection when it publishes it. An outcome window counts from the stored
stamp. When the twin cannot be asked (no fleet, no answer within :data:`FLEET_TIMEOUT_S`) the result is stored
unstamped, as the log says: the twin stamps it with its own time as it folds it, and the window opens at the
twin's time of the gateway's first outcome check (``ApprovalStore.window_from``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from actors.gateway import approvals as sm
from actors.gateway import spans
from actors.gateway.approvals import Approval, Decision
from actors.gateway.outcomes import expectation, judge, observe
from actors.gateway.store import ApprovalStore
from actors.gateway.undo import TWIN_READ, inverse
from actors.metrics import Metrics
from actors.ports import Fleet
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets

log = logging.getLogger("opsloop.gateway")

EXECUTE_TIMEOUT_S = 30.0
FLEET_TIMEOUT_S = 10.0
#: Bound of the twin's snapshot taken before an action runs, for its inverse (past it: the actuator's word only).
BEFORE_TIMEOUT_S = 2.0


class Actuator(Protocol):
    """Carries out an approved action in the data center (idempotent by ``action_id``).

    An actuator whose results reach the twin by themselves (the simulator's) sets ``feeds_back = True`` (one that
    routes actions to others says it per action: ``feeds_back_for(action)``); for the others the gateway
    publishes the ``ActionResult`` to the feedback stream.
    """

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Execute; failures come back as ``ActionResult(status="failed")``, not exceptions."""
        ...


def feeds_back(actuator: Any, action: Action) -> bool:
    """Whether ``actuator`` reports the result of ``action`` to the twin itself (the gateway need not)."""
    per_action = getattr(actuator, "feeds_back_for", None)
    return bool(per_action(action) if callable(per_action) else getattr(actuator, "feeds_back", False))


def _result(ap: Approval, status: str, detail: str, traceparent: str | None = None, ts: float = 0.0) -> ActionResult:
    return ActionResult(ts=ts, action_id=ap.action_id, approval_id=ap.approval_id, action_kind=ap.action.kind,
                        targets=tuple(action_targets(ap.action)), status=status, detail=detail,  # type: ignore[arg-type]
                        traceparent=traceparent)


class Execution:
    """Runs approved actions through the actuator and records each result once, with its feedback and audit.

    The caller holds the gateway's lock around each call (one decision at a time inside the actor); the writes
    are compare-and-set besides, so a second gateway process cannot record a result twice.
    """

    def __init__(self, store: ApprovalStore, actuator: Actuator, meter: Metrics, fleet: Fleet | None = None) -> None:
        self.store = store
        self.actuator = actuator
        self.meter = meter
        self.fleet = fleet

    async def _twin_now(self, what: str) -> float:
        """The twin's time now (its snapshot's ``ts``) to stamp ``what`` with; 0.0 (unstamped) without a twin, and,
        logged, when it did not answer within :data:`FLEET_TIMEOUT_S` or has no time yet."""
        if self.fleet is None:
            return 0.0
        try:
            snap = await asyncio.wait_for(self.fleet.snapshot(), FLEET_TIMEOUT_S)
            now = float(snap.get("ts") or 0.0)
        except Exception as exc:  # noqa: BLE001 - an unreachable twin costs the stamp, never the record
            log.warning("%s stored unstamped: the twin's time is unknown (%r); the twin stamps it as it folds it",
                        what, exc)
            return 0.0
        if now <= 0.0:
            log.warning("%s stored unstamped: the twin has no time yet; it stamps it as it folds it", what)
        return max(now, 0.0)

    async def _stamped(self, result: ActionResult) -> ActionResult:
        """``result`` with the twin's time, unless it is stamped already (the simulator's)."""
        if result.ts:
            return result
        now = await self._twin_now(f"result {result.status} of {result.action_id} (approval {result.approval_id})")
        return result.model_copy(update={"ts": now}) if now else result

    async def run(self, ap: Approval, actor: str, channel: str) -> Approval:
        """Execute an approved action; returns the approval as recorded (executed or failed), or as another
        writer left it if it changed meanwhile."""
        running = sm.start(ap, time.time())
        if not await self.store.save(running, ap):
            return (await self.store.load(ap.approval_id)) or ap
        return await self._carry_out(running, actor, channel)

    async def resume(self, lock: asyncio.Lock) -> list[str]:
        """Carry out approvals left ``executing`` by a gateway that died mid-way.

        The action goes to the actuator again with the same ``action_id``: actuators are idempotent by it (the
        simulator and the webhook receiver drop a repeat), so a crash between the call and the record neither
        loses the action nor runs it twice. Returns the approval ids resumed.
        """
        resumed = []
        for approval_id in await self.store.ids():
            ap = await self.store.load(approval_id)
            if ap is not None and ap.status == "executing":
                log.warning("resuming approval %s: it was executing when the gateway stopped", ap.approval_id)
                async with lock:
                    await self._carry_out(ap, "gateway", "recovery")
                resumed.append(ap.approval_id)
        return resumed

    async def _before(self, ap: Approval) -> dict[str, Any] | None:
        """The twin's snapshot just before ``ap`` runs, for its inverse's value before (only for the kinds whose value
        the twin reports: a cooling unit's; None without a twin or an answer within :data:`BEFORE_TIMEOUT_S`, so the
        action waits little for it)."""
        if self.fleet is None or ap.action.kind not in TWIN_READ:
            return None
        try:
            snap: dict[str, Any] = await asyncio.wait_for(self.fleet.snapshot(), BEFORE_TIMEOUT_S)
            return snap
        except Exception as exc:  # noqa: BLE001 - an unreachable twin costs the inverse, never the execution
            log.warning("approval %s: no twin snapshot before it ran (%r); its inverse rests on the actuator's word",
                        ap.approval_id, exc)
            return None

    async def _carry_out(self, running: Approval, actor: str, channel: str) -> Approval:
        """Call the actuator for an ``executing`` approval and record the result (with the action that undoes it,
        :func:`~actors.gateway.undo.inverse`), its feedback and its audit."""
        ap = running
        before = await self._before(ap)
        with spans.action(ap) as traceparent:
            try:
                result = await asyncio.wait_for(
                    self.actuator.execute(ap.action, ap.action_id, ap.approval_id, traceparent), EXECUTE_TIMEOUT_S
                )
            except Exception as exc:  # noqa: BLE001 - a dead actuator is recorded as a failed execution
                result = _result(ap, "failed", f"actuator error: {exc!r}", traceparent)
        result = await self._stamped(result)  # the outcome window counts from this stamp
        self.meter.inc("opsloop_actions_total", outcome=result.status)
        now = time.time()
        recorded = result.model_dump(mode="json")
        done = sm.finish(running, recorded, now, inverse(running, recorded, before))
        feedback = None if feeds_back(self.actuator, ap.action) else result
        await self.store.save(done, running, also=lambda pipe: self.store.queue_execution(pipe, done, now, feedback))
        undo = {"inverse": done.inverse.model_dump(mode="json")} if done.inverse is not None else {}
        await self.store.record(done, "execution", actor, channel, result=result.model_dump(mode="json"), **undo)
        return done

    async def rejected(self, ap: Approval, d: Decision) -> None:
        """An operator's "no" goes back to the twin with their reason (stamped with the twin's time), and so to the
        agent."""
        await self.store.publish(await self._stamped(_result(ap, "rejected", d.reason)))

    async def check_outcomes(self, fleet: Fleet, lock: asyncio.Lock) -> list[Approval]:
        """Judge executed approvals that carry a prediction against the twin's snapshot; record met or missed
        outcomes in the approval and the audit trail; a miss goes back to the twin as a failed ActionResult."""
        ids = await self.store.awaiting()
        if not ids:
            return []
        snap = await asyncio.wait_for(fleet.snapshot(), FLEET_TIMEOUT_S)
        now_twin = float(snap.get("ts") or 0.0)
        judged = []
        async with lock:
            for aid in ids:
                ap = await self.store.load(aid)
                if ap is None or ap.prediction is None or ap.outcome is not None:
                    await self.store.settled(aid)
                    continue
                stamped = float((ap.result or {}).get("ts") or 0.0)  # unstamped: the twin could not be asked
                executed_ts = stamped or await self.store.window_from(aid, now_twin)
                observed = observe(ap.prediction, snap)
                verdict = judge(ap.prediction, observed, now_twin - executed_ts)
                if verdict == "waiting":
                    continue
                outcome = {"verdict": verdict, "observed": observed, "at_ts": now_twin,
                           "elapsed_s": round(now_twin - executed_ts, 3), "expected": expectation(ap.prediction)}
                new = sm.record_outcome(ap, outcome, time.time())
                if not await self.store.save(new, ap):
                    continue
                await self.store.settled(aid)
                await self.store.record(new, "outcome", "gateway", "gateway", **outcome)
                outcome_tp = spans.outcome(ap, verdict, observed)
                self.meter.inc("opsloop_action_outcomes_total", verdict=verdict)
                if verdict != "met":
                    detail = f"outcome {verdict}: expected {outcome['expected']}, observed {observed}"
                    await self.store.publish(_result(ap, "failed", detail, outcome_tp, ts=now_twin))
                judged.append(new)
        return judged
