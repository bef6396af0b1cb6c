"""The gateway's shell: approvals persisted in Redis, the policy applied, approved actions executed.

One asyncio lock serialises decisions inside this actor, and every write is a compare-and-set on the
approval's stored JSON (WATCH/MULTI), so two decisions at once, even from two gateway processes, yield
one decision. Everything lives in Redis (approvals, users, the audit trail, execution counters), so a
restarted gateway finds every pending approval where it was.

Keys (``{ns}:`` prefix): ``approval:<id>`` and ``approvals`` (index), ``executed:<kind>`` (sorted set of
executions, for blast radius), ``awaiting_outcome`` (executed approvals with a prediction to check),
``audit`` and ``audit:head``, ``refused`` (ids of proposals refused on submit), ``users``/``tokens``,
``notifications`` (emergencies, for people) and ``feedback`` (ActionResult samples the twin reads as
telemetry: outcome misses, and results of actuators that do not report through the simulator).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import WatchError

from actors.agent.proposals import Proposal
from actors.gateway import approvals as sm
from actors.gateway import traced
from actors.gateway.approvals import Approval, Decision, Refusal
from actors.gateway.audit import AuditLog
from actors.gateway.auth import hash_token
from actors.gateway.outcomes import expectation, judge, observe
from actors.gateway.users import UserStore
from actors.metrics import Metrics
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets, parse_action
from policies.policy import Executed, Policy
from policies.verify import check_action, check_proposal

log = logging.getLogger("opsloop.gateway")

EXECUTE_TIMEOUT_S = 30.0
FLEET_TIMEOUT_S = 10.0
SWEEP_EVERY_S = 1.0


class Actuator(Protocol):
    """Carries out an approved action in the data center (idempotent by ``action_id``).

    An actuator whose results reach the twin by themselves (the simulator's) sets ``feeds_back = True``;
    for the others the gateway publishes the ``ActionResult`` to the feedback stream.
    """

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Execute; failures come back as ``ActionResult(status="failed")``, not exceptions."""
        ...


class Fleet(Protocol):
    """What the gateway reads of the twin: the snapshot (outcomes) and the topology (edits, fleet size)."""

    async def snapshot(self) -> dict: ...

    async def topology(self) -> Mapping[str, Collection[str]]: ...


def _refuse(code: str, message: str) -> dict:
    return {"refusal": Refusal(code=code, message=message).model_dump()}  # type: ignore[arg-type]


class GatewayService:
    """Applies the policy to proposals and operators' decisions to approvals."""

    def __init__(
        self, redis_url: str, namespace: str, policy: Policy, actuator: Actuator, fleet: Fleet | None = None
    ) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.ns = namespace
        self.policy = policy
        self.actuator = actuator
        self.fleet = fleet
        self.audit = AuditLog(self.redis, namespace)
        self.users = UserStore(self.redis, namespace)
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.meter = Metrics()
        self.meter.declare("opsloop_decision_latency_seconds")

    def _key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    async def _load(self, approval_id: str) -> Approval | None:
        raw = await self.redis.get(self._key("approval", approval_id))
        return Approval.model_validate_json(raw) if raw else None

    async def _save(self, ap: Approval, expect: Approval | None, also: Callable[[Any], None] | None = None) -> bool:
        """Write ``ap`` if the stored version is still ``expect`` (None: must not exist); ``also`` adds commands
        to the same transaction."""
        key = self._key("approval", ap.approval_id)
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
                pipe.zadd(self._key("approvals"), {ap.approval_id: ap.created_ts})
                if also is not None:
                    also(pipe)
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def _audit(self, ap: Approval, type: str, actor: str, channel: str, **payload: Any) -> None:
        await self.audit.append(
            time.time(), type, actor, channel, approval_id=ap.approval_id, incident_id=ap.incident_id,  # type: ignore[arg-type]
            proposal_id=ap.proposal_id, action_id=ap.action_id,
            payload={"status": ap.status, "action": ap.action.model_dump(mode="json"), **payload},
        )

    # --- policy gates -------------------------------------------------------------------------------
    async def _fleet_size(self) -> dict[str, int] | None:
        if self.fleet is None:
            return None
        topo = await asyncio.wait_for(self.fleet.topology(), FLEET_TIMEOUT_S)
        return {k: len(v) for k, v in topo.items()}

    async def _gate(self, ap: Approval, now: float) -> str | None:
        """Why the policy holds this approved action back now (change window, blast radius), or None."""
        rows = await self.redis.zrangebyscore(self._key("executed", ap.action.kind), now - 86400 * 7, "+inf",
                                              withscores=True)
        executed = [Executed(ts=ts, target=json.loads(m)["t"]) for m, ts in rows]
        rule = self.policy.rule_for(ap.action.kind)
        fleet = await self._fleet_size() if rule is not None and rule.max_fleet_frac is not None else None
        return self.policy.gate(ap.action, now, executed, fleet, emergency=ap.emergency)

    # --- from the agent -----------------------------------------------------------------------------
    async def submit(self, proposal: Proposal) -> list[dict]:
        """Open an approval per proposed action (a repeat of a known action is a no-op); run auto ones.

        The proposal is verified again first (``policies.verify.check_proposal``: the agent's flag, and every
        action against the fleet): a proposal that fails opens nothing, and its refusal is recorded as data, an
        audit entry of type ``proposal`` with status ``refused`` (once per proposal id); the answer then holds
        one ``{"refusal": …}`` per action."""
        topology = await asyncio.wait_for(self.fleet.topology(), FLEET_TIMEOUT_S) if self.fleet is not None else None
        problems = check_proposal([pa.action for pa in proposal.actions], proposal.verified, topology,
                                  proposal.problems)
        if problems:
            return await self._refuse_proposal(proposal, problems)
        out = []
        now = time.time()
        for pa in proposal.actions:
            verdict = self.policy.evaluate(pa.action, emergency=proposal.emergency)
            ap = traced.opened(sm.open_approval(proposal, pa, verdict, now, self.policy.expiry_s), proposal)
            async with self._lock:
                existing = await self._load(ap.approval_id)
                if existing is None:
                    held = await self._gate(ap, now) if ap.status == "approved" else None
                    if held:  # an auto action outside its window or over its blast radius does not run
                        ap = ap.model_copy(update={"status": "denied", "policy": f"{ap.policy}; held: {held}"})
                    if await self._save(ap, None):
                        existing = ap
                        await self._audit(ap, "proposal", sm.AGENT, "agent", policy=ap.policy, summary=ap.summary,
                                          emergency=ap.emergency, citations=[c.model_dump() for c in ap.citations])
                        if ap.emergency:
                            await self._notify(ap, f"EMERGENCY {ap.summary} runs now: {ap.policy}")
                        if ap.status == "approved":
                            existing = await self._execute(ap, actor="policy", channel="policy")
            out.append(existing.model_dump(mode="json") if existing else {})
        return out

    async def _refuse_proposal(self, proposal: Proposal, problems: list[str]) -> list[dict]:
        message = f"proposal {proposal.proposal_id} refused: {'; '.join(problems)}"
        log.warning("%s", message)
        key = self._key("refused")
        if not await self.redis.sismember(key, proposal.proposal_id):  # a resubmitted proposal is audited once
            await self.audit.append(
                time.time(), "proposal", sm.AGENT, "agent", incident_id=proposal.incident_id,
                proposal_id=proposal.proposal_id,
                payload={"status": "refused", "reason": message, "problems": problems,
                         "agent_verified": proposal.verified, "agent_problems": list(proposal.problems),
                         "actions": [pa.action.model_dump(mode="json") for pa in proposal.actions]},
            )
            await self.redis.sadd(key, proposal.proposal_id)
        refusal = Refusal(code="invalid", message=message).model_dump()
        return [{"refusal": refusal} for _ in proposal.actions] or [{"refusal": refusal}]

    async def _notify(self, ap: Approval, message: str) -> None:
        await self.redis.xadd(self._key("notifications"), {"approval_id": ap.approval_id, "message": message},
                              maxlen=10_000, approximate=True)

    # --- from operators -----------------------------------------------------------------------------
    async def decide(self, approval_id: str, decision: dict) -> dict:
        """Apply a decision (``decision``, ``by``, ``role``, ``reason``, ``channel``, ``action_hash``, optional
        ``client``); returns ``{"approval": …}`` or ``{"refusal": {"code", "message"}}``. The caller is the
        serving layer, which sets ``channel`` from the route the decision came through. A decision without the
        hash of the action it was shown, or with another one, is refused (``stale``). An approval that becomes
        approved is executed before return, unless the policy holds it back (then the decision is refused,
        ``blocked``)."""
        now = time.time()
        async with self._lock:
            ap = await self._expired_or(approval_id, now)
            if ap is None:
                return _refuse("not_found", f"no approval {approval_id}")
            if not decision.get("action_hash"):
                return {"refusal": sm.refuse_unbound(ap, now).model_dump()}
            d = Decision.model_validate({**decision, "ts": now})
            new = sm.decide(ap, d)
            if isinstance(new, Refusal):
                return {"refusal": new.model_dump()}
            new = traced.decided(new, d, ap.created_ts)
            if new.status == "approved":
                held = await self._gate(new, d.ts)
                if held:
                    return _refuse("blocked", f"not executed and not recorded: {held}")
            if not await self._save(new, ap):
                return _refuse("conflict", "decided concurrently; look again")
            await self._audit(new, "decision", d.by, d.channel, decision=d.decision, reason=d.reason, role=d.role,
                              action_hash=new.action_hash, **({"client": d.client} if d.client else {}))
            if new.status != "pending":  # the decision that settled it (not a first of two approvals)
                self.meter.observe("opsloop_decision_latency_seconds", max(d.ts - ap.created_ts, 0.0))
            if new.status == "rejected":  # the operator's reason goes back to the twin, and so to the agent
                said_no = ActionResult(
                    ts=0.0, action_id=new.action_id, approval_id=new.approval_id, action_kind=new.action.kind,
                    targets=tuple(action_targets(new.action)), status="rejected", detail=d.reason,
                )
                await self.redis.xadd(self._key("feedback"), {"sample": await self._stamped(said_no)})
            if new.status == "approved":
                new = await self._execute(new, actor=d.by, channel=d.channel)
        return {"approval": new.model_dump(mode="json")}

    async def edit(self, approval_id: str, params: dict, by: str, channel: str = "http", reason: str = "") -> dict:
        """Change a pending action's parameters; the edited action is verified and judged again."""
        now = time.time()
        async with self._lock:
            ap = await self._expired_or(approval_id, now)
            if ap is None:
                return _refuse("not_found", f"no approval {approval_id}")
            if "kind" in params and params["kind"] != ap.action.kind:
                return _refuse("invalid", f"an edit keeps the kind ({ap.action.kind}); propose anew instead")
            try:
                action = parse_action({**ap.action.model_dump(mode="json"), **params})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
                return _refuse("invalid", f"the edited action does not validate: {problems}")
            if self.fleet is not None:
                issues = check_action(action, await asyncio.wait_for(self.fleet.topology(), FLEET_TIMEOUT_S))
                if issues:
                    return _refuse("invalid", "; ".join(issues))
            new = sm.edit(ap, action, self.policy.evaluate(action), by=by, channel=channel,  # type: ignore[arg-type]
                          reason=reason, now=now, expiry_s=self.policy.expiry_s)
            if isinstance(new, Refusal):
                return {"refusal": new.model_dump()}
            if not await self._save(new, ap):
                return _refuse("conflict", "changed concurrently; look again")
            await self._audit(new, "edit", by, channel, reason=reason, before=new.edits[-1].before,
                              policy=new.policy, action_hash=new.action_hash)
        return {"approval": new.model_dump(mode="json")}

    async def _expired_or(self, approval_id: str, now: float) -> Approval | None:
        """The stored approval, moved to expired (and audited) first if its time ran out."""
        ap = await self._load(approval_id)
        if ap is not None:
            expired = sm.expire(ap, now)
            if expired is not None and await self._save(expired, ap):
                await self._audit(expired, "expiry", "gateway", "policy", expires_ts=ap.expires_ts)
                ap = expired
        return ap

    async def _execute(self, ap: Approval, actor: str, channel: str) -> Approval:
        running = sm.with_status(ap, "executing", time.time())
        if not await self._save(running, ap):
            return (await self._load(ap.approval_id)) or ap
        return await self._carry_out(running, actor, channel)

    async def resume_executing(self) -> list[str]:
        """Carry out approvals left ``executing`` by a gateway that died mid-way (``run`` calls it first).

        The action goes to the actuator again with the same ``action_id``: actuators are idempotent by it (the
        simulator and the webhook receiver drop a repeat), so a crash between the call and the record neither
        loses the action nor runs it twice. Returns the approval ids resumed.
        """
        resumed = []
        for raw_id in await self.redis.zrevrange(self._key("approvals"), 0, -1):
            ap = await self._load(raw_id.decode())
            if ap is not None and ap.status == "executing":
                log.warning("resuming approval %s: it was executing when the gateway stopped", ap.approval_id)
                async with self._lock:
                    await self._carry_out(ap, "gateway", "recovery")
                resumed.append(ap.approval_id)
        return resumed

    async def _carry_out(self, running: Approval, actor: str, channel: str) -> Approval:
        """Call the actuator for an ``executing`` approval and record the result, its feedback and its audit."""
        ap = running
        with traced.action(ap) as traceparent:
            try:
                result = await asyncio.wait_for(
                    self.actuator.execute(ap.action, ap.action_id, ap.approval_id, traceparent), EXECUTE_TIMEOUT_S
                )
            except Exception as exc:  # noqa: BLE001 - a dead actuator is recorded as a failed execution
                result = ActionResult(
                    ts=0.0, action_id=ap.action_id, approval_id=ap.approval_id, action_kind=ap.action.kind,
                    targets=tuple(action_targets(ap.action)), status="failed", detail=f"actuator error: {exc!r}",
                    traceparent=traceparent,
                )
        self.meter.inc("opsloop_actions_total", outcome=result.status)
        now = time.time()
        done = sm.with_status(running, result.status, now, result.model_dump(mode="json"))
        feedback = None if getattr(self.actuator, "feeds_back", False) else await self._stamped(result)

        def record(pipe: Any) -> None:  # with the status, in one transaction: a crash keeps all or none
            if result.status == "executed":
                for t in action_targets(ap.action) or [ap.action.kind]:
                    pipe.zadd(self._key("executed", ap.action.kind), {json.dumps({"t": t, "a": ap.action_id}): now})
                if ap.prediction is not None and ap.prediction.checkable:
                    pipe.sadd(self._key("awaiting_outcome"), ap.approval_id)
            if feedback is not None:
                pipe.xadd(self._key("feedback"), {"sample": feedback})

        await self._save(done, running, also=record)
        await self._audit(done, "execution", actor, channel, result=result.model_dump(mode="json"))
        return done

    async def _stamped(self, result: ActionResult) -> str:
        """The result as a sample on the twin's clock (actuators outside the simulator do not know it)."""
        if self.fleet is not None and result.ts == 0.0:
            try:
                snap = await asyncio.wait_for(self.fleet.snapshot(), FLEET_TIMEOUT_S)
                result = result.model_copy(update={"ts": float(snap.get("ts") or 0.0)})
            except Exception:  # noqa: BLE001 - the sample still goes, on its own clock
                log.warning("could not read the twin's clock for %s", result.action_id)
        return result.model_dump_json()

    # --- closing the loop ---------------------------------------------------------------------------
    async def check_outcomes(self) -> list[dict]:
        """Judge executed approvals that carry a prediction against the twin's snapshot; record met or missed
        outcomes in the approval and the audit trail; a miss goes back to the twin as a failed ActionResult."""
        ids = [i.decode() for i in await self.redis.smembers(self._key("awaiting_outcome"))]
        if not ids or self.fleet is None:
            return []
        snap = await asyncio.wait_for(self.fleet.snapshot(), FLEET_TIMEOUT_S)
        now_twin = float(snap.get("ts") or 0.0)
        judged = []
        async with self._lock:
            for aid in sorted(ids):
                ap = await self._load(aid)
                if ap is None or ap.prediction is None or ap.outcome is not None:
                    await self.redis.srem(self._key("awaiting_outcome"), aid)
                    continue
                executed_ts = float((ap.result or {}).get("ts") or 0.0)
                observed = observe(ap.prediction, snap)
                verdict = judge(ap.prediction, observed, now_twin - executed_ts)
                if verdict == "waiting":
                    continue
                outcome = {"verdict": verdict, "observed": observed, "at_ts": now_twin,
                           "elapsed_s": round(now_twin - executed_ts, 3), "expected": expectation(ap.prediction)}
                new = ap.model_copy(update={"outcome": outcome, "updated_ts": time.time()})
                if not await self._save(new, ap):
                    continue
                await self.redis.srem(self._key("awaiting_outcome"), aid)
                await self._audit(new, "outcome", "gateway", "gateway", **outcome)
                outcome_tp = traced.outcome(ap, verdict, observed)
                self.meter.inc("opsloop_action_outcomes_total", verdict=verdict)
                if verdict != "met":
                    miss = ActionResult(
                        ts=now_twin, action_id=ap.action_id, approval_id=aid, action_kind=ap.action.kind,
                        targets=tuple(action_targets(ap.action)), status="failed",
                        detail=f"outcome {verdict}: expected {outcome['expected']}, observed {observed}",
                        traceparent=outcome_tp,
                    )
                    await self.redis.xadd(self._key("feedback"), {"sample": miss.model_dump_json()})
                judged.append(new.model_dump(mode="json"))
        return judged

    async def sweep(self) -> None:
        """Expire due approvals (audited) and check outcomes; ``run`` calls this every second."""
        ids = await self.redis.zrevrange(self._key("approvals"), 0, 499)
        now = time.time()
        for raw_id in ids:
            await self._expired_or(raw_id.decode(), now)
        await self.check_outcomes()

    async def run(self) -> None:
        """Loop until ``stop``: first what a dead predecessor left executing, then expiry and outcome checks."""
        resumed = False
        while not self._stop.is_set():
            try:
                if not resumed:
                    await self.resume_executing()
                    resumed = True
                await self.sweep()
            except Exception:  # noqa: BLE001 - keep the gateway's loop alive; the next sweep retries
                log.exception("gateway sweep failed; retrying")
            try:
                await asyncio.wait_for(self._stop.wait(), SWEEP_EVERY_S)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()

    # --- users --------------------------------------------------------------------------------------
    async def authenticate(self, token: str) -> dict | None:
        """``{"name", "role"}`` of the token's user, or None."""
        user = await self.users.by_token(token)
        return {"name": user.name, "role": user.role} if user else None

    async def create_user(self, name: str, role: str, by: str, channel: str = "http") -> dict:
        """A new user (or a new token for one); the token is in the answer and nowhere else."""
        user, token = await self.users.create(name, role, by, time.time())
        await self.audit.append(time.time(), "user", by, channel, payload={"name": name, "role": role})
        return {**user.public(), "token": token}

    async def ensure_user(self, name: str, role: str, token_hash: str) -> bool:
        """Register a token hash made elsewhere (the admin token of ``opsloop up``); True if new."""
        changed = await self.users.ensure(name, role, token_hash, time.time())
        if changed:
            await self.audit.append(time.time(), "user", "opsloop up", "cli", payload={"name": name, "role": role})
        return changed

    async def ensure_token(self, name: str, role: str, token: str) -> bool:
        """Like ``ensure_user`` from a token (hashed here)."""
        return await self.ensure_user(name, role, hash_token(token))

    async def list_users(self) -> list[dict]:
        return await self.users.list()

    # --- audit --------------------------------------------------------------------------------------
    async def audit_entries(self, incident_id: str | None = None, approval_id: str | None = None) -> list[dict]:
        return await self.audit.entries(incident_id, approval_id)

    async def audit_verify(self) -> dict:
        return (await self.audit.verify()).model_dump()

    # --- reads --------------------------------------------------------------------------------------
    async def get(self, approval_id: str) -> dict | None:
        ap = await self._load(approval_id)
        return ap.model_dump(mode="json") if ap else None

    async def list(self, status: str | None = None, limit: int = 500) -> list[dict]:
        """Approvals, newest first; pending ones past their expiry are shown (and stored) as expired."""
        ids = await self.redis.zrevrange(self._key("approvals"), 0, limit - 1)
        out = []
        now = time.time()
        for raw_id in ids:
            ap = await self._expired_or(raw_id.decode(), now)  # a CAS write: no lock needed, one writer wins
            if ap is not None and (status is None or ap.status == status):
                out.append(ap.model_dump(mode="json"))
        return out

    async def metrics(self) -> list[dict]:
        """Approvals by state, decision latency, actions by outcome (``actors.metrics`` dump)."""
        self.meter.clear("opsloop_approvals")
        for state, n in (await self.counts()).items():
            self.meter.set("opsloop_approvals", n, state=state)
        return self.meter.dump()

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ap in await self.list():
            counts[ap["status"]] = counts.get(ap["status"], 0) + 1
        return counts
