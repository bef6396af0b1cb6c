"""Approvals in Redis: the keys, the compare-and-set write, listing, expiry, and each approval's audit entries.

Every write of an approval is a compare-and-set on its stored JSON (WATCH/MULTI), so two decisions at once, even
from two gateway processes, yield one decision. Everything lives in Redis, so a restarted gateway finds every
pending approval where it was.

Keys (``{ns}:`` prefix): ``approval:<id>`` and ``approvals`` (index by creation time), ``executed:<kind>`` (sorted
set of executions, for blast radius), ``awaiting_outcome`` (executed approvals with a prediction to check) and
``outcome_from`` (approval → the twin time its outcome window opened, for results stored unstamped),
``audit`` and ``audit:head`` (:mod:`actors.gateway.audit`), ``refused`` (ids of proposals refused on submit),
``users``/``tokens`` (:mod:`actors.gateway.users`), ``notifications`` (emergencies, for people) and ``feedback``
(``ActionResult`` samples the twin reads as telemetry: rejections, outcome misses, and results of actuators that
do not report through the simulator).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from actors.gateway import approvals as sm
from actors.gateway.approvals import Approval
from actors.gateway.audit import AuditLog, EntryType
from cluster.telemetry.samples import ActionResult
from policies.actions import action_targets
from policies.policy import Executed

#: How far back executions count for blast-radius limits.
EXECUTED_KEPT_S = 86400 * 7


class ApprovalStore:
    """The Redis shell over approvals (the state machine itself is :mod:`actors.gateway.approvals`)."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.ns = namespace
        self.audit = AuditLog(redis, namespace)

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    # --- approvals ----------------------------------------------------------------------------------
    async def load(self, approval_id: str) -> Approval | None:
        raw = await self.redis.get(self.key("approval", approval_id))
        return Approval.model_validate_json(raw) if raw else None

    async def save(self, ap: Approval, expect: Approval | None, also: Callable[[Any], None] | None = None) -> bool:
        """Write ``ap`` if the stored version is still ``expect`` (None: must not exist); ``also`` adds commands
        to the same transaction. False: someone else wrote first (nothing written)."""
        key = self.key("approval", ap.approval_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = await pipe.get(key)
                if (current is None) != (expect is None) or (
                    expect is not None and Approval.model_validate_json(current) != expect
                ):
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(key, ap.model_dump_json())
                pipe.zadd(self.key("approvals"), {ap.approval_id: ap.created_ts})
                if also is not None:
                    also(pipe)
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def ids(self, limit: int | None = None) -> list[str]:
        """Approval ids, newest first (``limit``: at most that many)."""
        raw = await self.redis.zrevrange(self.key("approvals"), 0, -1 if limit is None else limit - 1)
        return [r.decode() for r in raw]

    async def current(self, approval_id: str, now: float) -> Approval | None:
        """The stored approval, moved to expired (and audited) first if its time ran out.

        A compare-and-set write: no lock needed, one writer wins and the others read its result."""
        ap = await self.load(approval_id)
        if ap is not None:
            expired = sm.expire(ap, now)
            if expired is not None and await self.save(expired, ap):
                await self.record(expired, "expiry", "gateway", "policy", expires_ts=ap.expires_ts)
                ap = expired
        return ap

    async def listing(self, status: str | None, limit: int, now: float) -> list[Approval]:
        """Approvals, newest first, optionally in one state; pending ones past their expiry expire first."""
        out = []
        for approval_id in await self.ids(limit):
            ap = await self.current(approval_id, now)
            if ap is not None and (status is None or ap.status == status):
                out.append(ap)
        return out

    async def record(self, ap: Approval, type: EntryType, actor: str, channel: str, **payload: Any) -> None:
        """An audit entry about ``ap`` (its status and action, plus ``payload``)."""
        await self.audit.append(
            time.time(), type, actor, channel, approval_id=ap.approval_id, incident_id=ap.incident_id,
            proposal_id=ap.proposal_id, action_id=ap.action_id,
            payload={"status": ap.status, "action": ap.action.model_dump(mode="json"), **payload},
        )

    # --- refused proposals and notifications -----------------------------------------------------------
    async def was_refused(self, proposal_id: str) -> bool:
        return bool(await self.redis.sismember(self.key("refused"), proposal_id))

    async def mark_refused(self, proposal_id: str) -> None:
        await self.redis.sadd(self.key("refused"), proposal_id)

    async def notify(self, ap: Approval, message: str) -> None:
        """A message for people (emergencies)."""
        await self.redis.xadd(self.key("notifications"), {"approval_id": ap.approval_id, "message": message},
                              maxlen=10_000, approximate=True)

    # --- executions, feedback and outcome windows --------------------------------------------------------
    async def executed_since(self, kind: str, since: float) -> list[Executed]:
        """Executions of ``kind`` since ``since`` (wall clock), one per target (the policy's blast radius)."""
        rows = await self.redis.zrangebyscore(self.key("executed", kind), since, "+inf", withscores=True)
        return [Executed(ts=ts, target=json.loads(m)["t"]) for m, ts in rows]

    def queue_execution(self, pipe: Any, done: Approval, now: float, feedback: ActionResult | None) -> None:
        """Queue, in the transaction that records ``done``, what its execution adds: the executions the blast
        radius counts, the outcome to check, and the feedback sample (a crash keeps all of it or none)."""
        if done.status == "executed":
            for t in action_targets(done.action) or [done.action.kind]:
                pipe.zadd(self.key("executed", done.action.kind), {json.dumps({"t": t, "a": done.action_id}): now})
            if done.prediction is not None and done.prediction.checkable:
                pipe.sadd(self.key("awaiting_outcome"), done.approval_id)
        if feedback is not None:
            pipe.xadd(self.key("feedback"), {"sample": feedback.model_dump_json()})

    async def publish(self, result: ActionResult) -> None:
        """An ``ActionResult`` for the twin (it reads ``feedback`` like telemetry; it stamps one that comes unstamped
        with its own time)."""
        await self.redis.xadd(self.key("feedback"), {"sample": result.model_dump_json()})

    async def awaiting(self) -> list[str]:
        """Executed approvals whose prediction is still to be judged, by id."""
        return sorted(i.decode() for i in await self.redis.smembers(self.key("awaiting_outcome")))

    async def window_from(self, approval_id: str, now_twin: float) -> float:
        """When the outcome window of an approval whose result was stored unstamped (the twin could not be asked)
        opened on the twin's clock: the first ``now_twin`` asked with."""
        await self.redis.hsetnx(self.key("outcome_from"), approval_id, now_twin)
        return float(await self.redis.hget(self.key("outcome_from"), approval_id))

    async def settled(self, approval_id: str) -> None:
        """The approval's outcome needs no more checks."""
        await self.redis.srem(self.key("awaiting_outcome"), approval_id)
        await self.redis.hdel(self.key("outcome_from"), approval_id)
