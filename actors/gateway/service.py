"""The gateway actor's shell: proposals in, the policy applied, operators' decisions taken, approved actions run.

It wires the rooms and holds none of their logic: :mod:`actors.gateway.approvals` (the pure state machine: every
status change), :mod:`actors.gateway.store` (approvals and their audit entries in Redis, compare-and-set, listing,
expiry), :mod:`actors.gateway.execution` (run, resume after a crash, feedback to the twin, outcome checks),
:mod:`actors.gateway.users` and :mod:`actors.gateway.audit`. One asyncio lock serialises decisions inside this
actor; the store's writes are compare-and-set besides, so two gateway processes still yield one decision.

Commands (``submit``, ``decide``, ``edit``) answer typed :class:`~actors.gateway.replies.Reply` records; reads
answer the JSON the REST API returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from actors.agent.proposals import Proposal, ProposedAction
from actors.gateway import approvals as sm
from actors.gateway import spans
from actors.gateway.approvals import Approval, Decision, Refusal
from actors.gateway.audit import Report
from actors.gateway.auth import hash_token
from actors.gateway.effects import Effect, fallback, twin_current
from actors.gateway.execution import FLEET_TIMEOUT_S, Actuator, Execution
from actors.gateway.replies import Reply
from actors.gateway.store import EXECUTED_KEPT_S, ApprovalStore
from actors.gateway.undo import RETRY_AFTER, undo_proposal
from actors.gateway.users import UserStore
from actors.metrics import Metrics
from actors.ports import Fleet
from policies.actions import Action, action_hash, describe, parse_action
from policies.policy import Policy
from policies.verify import check_action, check_proposal, check_resume

__all__ = ["Actuator", "Fleet", "GatewayService"]

log = logging.getLogger("opsloop.gateway")

SWEEP_EVERY_S = 1.0
#: Bound of stating one action's effect (the actuator's reads, then the twin's): past it the card says unknown.
EFFECT_TIMEOUT_S = 5.0


class GatewayService:
    """Applies the policy to proposals and operators' decisions to approvals."""

    def __init__(
        self, redis_url: str, namespace: str, policy: Policy, actuator: Actuator, fleet: Fleet | None = None
    ) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.policy = policy
        self.fleet = fleet
        self.store = ApprovalStore(self.redis, namespace)
        self.users = UserStore(self.redis, namespace)
        self.meter = Metrics()
        self.meter.declare("opsloop_decision_latency_seconds")
        self.execution = Execution(self.store, actuator, self.meter, fleet)
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    # --- policy gates -------------------------------------------------------------------------------
    async def _topology(self) -> Any:
        return await asyncio.wait_for(self.fleet.topology(), FLEET_TIMEOUT_S) if self.fleet is not None else None

    async def _gate(self, ap: Approval, now: float) -> str | None:
        """Why the policy holds this approved action back now (change window, blast radius), or None."""
        executed = await self.store.executed_since(ap.action.kind, now - EXECUTED_KEPT_S)
        rule = self.policy.rule_for(ap.action.kind)
        fleet = None
        if rule is not None and rule.max_fleet_frac is not None and self.fleet is not None:
            fleet = {k: len(v) for k, v in (await self._topology()).items()}
        return self.policy.gate(ap.action, now, executed, fleet, emergency=ap.emergency)

    # --- from the agent -----------------------------------------------------------------------------
    async def submit(self, proposal: Proposal) -> list[Reply]:
        """Open an approval per proposed action (a repeat of a known action is a no-op); run auto ones.

        The proposal is verified again first (``policies.verify.check_proposal``: the agent's flag, and every
        action against the fleet): a proposal that fails opens nothing, and its refusal is recorded as data, an
        audit entry of type ``proposal`` with status ``refused`` (once per proposal id); the answer then holds
        one refusal per action. An auto action the policy holds back now (change window, blast radius) opens
        ``denied`` and never runs."""
        problems = check_proposal([pa.action for pa in proposal.actions], proposal.verified, await self._topology(),
                                  proposal.problems)
        if problems:
            return await self._refuse_proposal(proposal, problems)
        now = time.time()  # the proposal's time, the same for all its approvals (effect reads may wait between them)
        return [await self._open(proposal, pa, now=now) for pa in proposal.actions]

    async def _open(self, proposal: Proposal, pa: ProposedAction, by: str = sm.AGENT, channel: str = "agent",
                    undo_of: str | None = None, now: float | None = None) -> Reply:
        """Open the approval of one proposed action (``by``: its proposer; ``undo_of``: the approval it undoes), in
        the state the policy puts it, and run it if that is approved; a repeat answers the approval as it is.
        ``now``: the proposal's time (default: the present)."""
        now = time.time() if now is None else now
        if why := self.refusal(pa.action):  # nothing here can carry it out: refused now, never run elsewhere
            return await self._refuse_action(proposal, pa, why)
        if problems := await self._resume_problems(pa.action):
            return await self._refuse_action(proposal, pa, "; ".join(problems))
        verdict = self.policy.evaluate(pa.action, emergency=proposal.emergency)
        aid = sm.approval_id(pa.action_id)
        # What it will run, read before the lock (it may wait on the backend); not for a repeat or a denied one.
        effect = (await self.effect(pa.action, aid)
                  if verdict.mode != "deny" and await self.store.load(aid) is None else None)
        ap = spans.opened(sm.open_approval(proposal, pa, verdict, now, self.policy.expiry_s, effect), proposal)
        if undo_of is not None:  # an operator's undo: they proposed it, so they cannot approve it themselves
            ap = ap.model_copy(update={"proposer": by, "source": "operator", "undo_of": undo_of})
        async with self._lock:
            existing = await self.store.load(ap.approval_id)
            if existing is None:
                held = await self._gate(ap, now) if ap.status == "approved" else None
                if held:
                    ap = sm.hold(ap, held, now)
                if await self.store.save(ap, None):
                    existing = await self._opened(ap, by, channel)
                else:  # another gateway opened it a moment ago
                    existing = await self.store.load(ap.approval_id)
        return (Reply.of(existing) if existing is not None
                else Reply.refused("conflict", f"approval {ap.approval_id} changed concurrently; look again"))

    async def _opened(self, ap: Approval, by: str = sm.AGENT, channel: str = "agent") -> Approval:
        undo = {"undo_of": ap.undo_of} if ap.undo_of else {}
        await self.store.record(ap, "proposal", by, channel, policy=ap.policy, summary=ap.summary,
                                emergency=ap.emergency, citations=[c.model_dump() for c in ap.citations],
                                effect=ap.effect.text if ap.effect else "", **undo)
        if ap.emergency:
            await self.store.notify(ap, f"EMERGENCY {ap.summary} runs now: {ap.policy}")
        if ap.status == "approved":
            return await self.execution.run(ap, actor="policy", channel="policy")
        return ap

    async def _resume_problems(self, action: Action) -> list[str]:
        """Why ``action`` (a ``resume_node``) is not the undo of an executed drain of its node (empty: it is, or it
        is another kind)."""
        if action.kind != "resume_node":
            return []
        drain = await self.store.load(action.drained_by)  # type: ignore[union-attr]
        return check_resume(action, drain.model_dump(mode="json") if drain else None)

    async def undo(self, approval_id: str, by: str, channel: str = "http", reason: str = "") -> Reply:
        """Propose the inverse of executed approval ``approval_id`` (recorded as it ran: :mod:`actors.gateway.undo`)
        as a new approval, asked by operator ``by`` and citing the one it undoes; the policy judges it like any
        proposal (auto, one or two approvers; ``by`` is its proposer and cannot approve it). A repeat answers the
        undo already proposed, unless that one was rejected, denied, expired or failed: then a new one opens."""
        ap = await self.store.load(approval_id)
        if ap is None:
            return Reply.refused("not_found", f"no approval {approval_id}")
        if ap.status != "executed" or ap.inverse is None:
            why = "it did not execute" if ap.status != "executed" else "its action has no recorded inverse"
            return Reply.refused("conflict", f"approval {approval_id} ({ap.summary}) cannot be undone: {why}")
        if ap.undone_by and (prior := await self.store.load(ap.undone_by)) is not None \
                and prior.status not in RETRY_AFTER:
            return Reply.of(prior)
        if self.fleet is not None and (issues := check_action(ap.inverse, await self._topology())):
            return Reply.refused("invalid", f"the undo of {approval_id} ({describe(ap.inverse)}): {'; '.join(issues)}")
        proposal = undo_proposal(ap, by, reason, time.time())
        reply = await self._open(proposal, proposal.actions[0], by, channel, undo_of=ap.approval_id)
        if reply.approval is not None and reply.approval.approval_id != ap.undone_by:
            async with self._lock:
                now_ap = await self.store.load(approval_id)
                if now_ap is not None and now_ap.undone_by != reply.approval.approval_id:
                    await self.store.save(sm.proposed_undo(now_ap, reply.approval.approval_id, time.time()), now_ap)
        return reply

    def refusal(self, action: Action) -> str | None:
        """Why the actuator that owns ``action``'s target cannot carry it out, known before anyone approves it (the
        Slurm actuator has no per-GPU drain, for one); ``None``: it can try."""
        refuses = getattr(self.execution.actuator, "refusal", None)
        return refuses(action) if callable(refuses) else None

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """What approving ``action`` (as approval ``approval_id``) will run, as the actuator states it, its
        ``current`` filled from the twin when the actuator does not read it. Bounded by :data:`EFFECT_TIMEOUT_S` for
        each of the two; a backend or twin that does not answer, or fails, makes ``current`` unknown (with why),
        never a lost or late approval."""
        states = getattr(self.execution.actuator, "effect", None)
        effect: Effect | None = None
        try:
            if callable(states):
                effect = await asyncio.wait_for(states(action, approval_id), EFFECT_TIMEOUT_S)
        except TimeoutError:
            effect = fallback(action, f"it stated nothing within {EFFECT_TIMEOUT_S:g} s")
        except Exception as exc:  # noqa: BLE001 - a card's line must never cost the approval
            log.exception("stating the effect of %s failed", describe(action))
            effect = fallback(action, f"stating it failed: {type(exc).__name__}: {exc}")
        effect = effect or fallback(action, "it does not state its calls")
        if effect.current is not None:
            return effect
        if self.fleet is None:
            return effect.with_current("unknown (the actuator does not read it and there is no twin)")
        try:
            snapshot = await asyncio.wait_for(self.fleet.snapshot(), EFFECT_TIMEOUT_S)
        except TimeoutError:
            return effect.with_current(f"unknown (the twin gave no snapshot within {EFFECT_TIMEOUT_S:g} s)")
        except Exception as exc:  # noqa: BLE001 - as above
            return effect.with_current(f"unknown (the twin's snapshot failed: {type(exc).__name__})")
        return effect.with_current(twin_current(action, snapshot))

    async def _refuse_action(self, proposal: Proposal, pa: ProposedAction, why: str) -> Reply:
        message = f"{describe(pa.action)} refused before approval: {why}"
        log.warning("proposal %s: %s", proposal.proposal_id, message)
        key = f"{proposal.proposal_id}:{pa.action_id}"
        if not await self.store.was_refused(key):  # a resubmitted proposal is audited once
            await self.store.audit.append(
                time.time(), "proposal", sm.AGENT, "agent", incident_id=proposal.incident_id,
                proposal_id=proposal.proposal_id,
                payload={"status": "refused", "reason": message, "problems": [why], "action_id": pa.action_id,
                         "actions": [pa.action.model_dump(mode="json")]},
            )
            await self.store.mark_refused(key)
        return Reply.refused("invalid", message)

    async def _refuse_proposal(self, proposal: Proposal, problems: list[str]) -> list[Reply]:
        message = f"proposal {proposal.proposal_id} refused: {'; '.join(problems)}"
        log.warning("%s", message)
        if not await self.store.was_refused(proposal.proposal_id):  # a resubmitted proposal is audited once
            await self.store.audit.append(
                time.time(), "proposal", sm.AGENT, "agent", incident_id=proposal.incident_id,
                proposal_id=proposal.proposal_id,
                payload={"status": "refused", "reason": message, "problems": problems,
                         "agent_verified": proposal.verified, "agent_problems": list(proposal.problems),
                         "actions": [pa.action.model_dump(mode="json") for pa in proposal.actions]},
            )
            await self.store.mark_refused(proposal.proposal_id)
        return [Reply.refused("invalid", message)] * max(len(proposal.actions), 1)

    # --- from operators -----------------------------------------------------------------------------
    async def decide(self, approval_id: str, decision: dict) -> Reply:
        """Apply a decision (``decision``, ``by``, ``role``, ``reason``, ``channel``, ``action_hash``, optional
        ``client``). The caller is the serving layer, which sets ``channel`` from the route the decision came
        through. A decision without the hash of the action it was shown, or with another one, is refused
        (``stale``). An approval that becomes approved is executed before return, unless the policy holds it
        back (then the decision is refused, ``blocked``, and not recorded)."""
        now = time.time()
        async with self._lock:
            ap = await self.store.current(approval_id, now)
            if ap is None:
                return Reply.refused("not_found", f"no approval {approval_id}")
            if not decision.get("action_hash"):
                return Reply.of(sm.refuse_unbound(ap, now))
            d = Decision.model_validate({**decision, "ts": now})
            new = sm.decide(ap, d)
            if isinstance(new, Refusal):
                return Reply.of(new)
            new = spans.decided(new, d, ap.created_ts)
            if new.status == "approved" and (held := await self._gate(new, d.ts)):
                return Reply.of(sm.blocked(held))
            if not await self.store.save(new, ap):
                return Reply.refused("conflict", "decided concurrently; look again")
            client = {"client": d.client} if d.client else {}
            await self.store.record(new, "decision", d.by, d.channel, decision=d.decision, reason=d.reason,
                                    role=d.role, action_hash=new.action_hash, **client)
            if new.status != "pending":  # the decision that settled it (not a first of two approvals)
                self.meter.observe("opsloop_decision_latency_seconds", max(d.ts - ap.created_ts, 0.0))
            if new.status == "rejected":
                await self.execution.rejected(new, d)
            if new.status == "approved":
                new = await self.execution.run(new, actor=d.by, channel=d.channel)
        return Reply.of(new)

    async def edit(self, approval_id: str, params: dict, by: str, channel: str = "http", reason: str = "") -> Reply:
        """Change a pending action's parameters; the edited action is verified and judged again, and its effect
        stated again (before the lock is taken: it may wait on the backend)."""
        early = await self._edit_effect(approval_id, params)
        now = time.time()
        async with self._lock:
            ap = await self.store.current(approval_id, now)
            if ap is None:
                return Reply.refused("not_found", f"no approval {approval_id}")
            if "kind" in params and params["kind"] != ap.action.kind:
                return Reply.refused("invalid", f"an edit keeps the kind ({ap.action.kind}); propose anew instead")
            try:
                action = parse_action({**ap.action.model_dump(mode="json"), **params})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
                return Reply.refused("invalid", f"the edited action does not validate: {problems}")
            if self.fleet is not None and (issues := check_action(action, await self._topology())):
                return Reply.refused("invalid", "; ".join(issues))
            if why := self.refusal(action):
                return Reply.refused("invalid", f"{describe(action)}: {why}")
            if unresumable := await self._resume_problems(action):
                return Reply.refused("invalid", "; ".join(unresumable))
            effect = None  # none for an edit sm.edit refuses
            if early and early[0] == action_hash(action):
                effect = early[1]
            elif ap.status == "pending" and action_hash(action) != ap.action_hash:  # it changed meanwhile
                effect = await self.effect(action, approval_id)
            new = sm.edit(ap, action, self.policy.evaluate(action), by=by, channel=channel,  # type: ignore[arg-type]
                          reason=reason, now=now, expiry_s=self.policy.expiry_s, effect=effect)
            if isinstance(new, Refusal):
                return Reply.of(new)
            if not await self.store.save(new, ap):
                return Reply.refused("conflict", "changed concurrently; look again")
            await self.store.record(new, "edit", by, channel, reason=reason, before=new.edits[-1].before,
                                    policy=new.policy, action_hash=new.action_hash,
                                    effect=new.effect.text if new.effect else "")
        return Reply.of(new)

    async def _edit_effect(self, approval_id: str, params: dict) -> tuple[str, Effect] | None:
        """The hash and effect of the action an edit would make of the approval as it is now (``None``: none)."""
        ap = await self.store.load(approval_id)
        if ap is None or ap.status != "pending":
            return None
        try:
            action = parse_action({**ap.action.model_dump(mode="json"), **params})
        except ValidationError:
            return None
        if action.kind != ap.action.kind or action_hash(action) == ap.action_hash or self.refusal(action):
            return None  # the edit is refused: nothing to state
        return action_hash(action), await self.effect(action, approval_id)

    # --- the loop -----------------------------------------------------------------------------------
    async def resume_executing(self) -> list[str]:
        """Carry out approvals left ``executing`` by a gateway that died mid-way (``run`` calls it first); returns
        the approval ids resumed (see ``Execution.resume``)."""
        return await self.execution.resume(self._lock)

    async def check_outcomes(self) -> list[Approval]:
        """Judge executed approvals that carry a prediction against the twin (see ``Execution.check_outcomes``);
        returns the approvals judged now."""
        if self.fleet is None:
            return []
        return await self.execution.check_outcomes(self.fleet, self._lock)

    async def sweep(self) -> None:
        """Expire due approvals (audited) and check outcomes; ``run`` calls this every second."""
        now = time.time()
        for approval_id in await self.store.ids(500):
            await self.store.current(approval_id, now)
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
        await self.store.audit.append(time.time(), "user", by, channel, payload={"name": name, "role": role})
        return {**user.public(), "token": token}

    async def ensure_user(self, name: str, role: str, token_hash: str) -> bool:
        """Register a token hash made elsewhere (the admin token of ``opsloop up``); True if new."""
        changed = await self.users.ensure(name, role, token_hash, time.time())
        if changed:
            await self.store.audit.append(time.time(), "user", "opsloop up", "cli",
                                          payload={"name": name, "role": role})
        return changed

    async def ensure_token(self, name: str, role: str, token: str) -> bool:
        """Like ``ensure_user`` from a token (hashed here)."""
        return await self.ensure_user(name, role, hash_token(token))

    async def list_users(self) -> list[dict]:
        return await self.users.list()

    # --- audit --------------------------------------------------------------------------------------
    async def audit_entries(self, incident_id: str | None = None, approval_id: str | None = None) -> list[dict]:
        return await self.store.audit.entries(incident_id, approval_id)

    async def audit_verify(self) -> Report:
        """The hash chain checked (``ok``; ``problem`` names the first bad entry)."""
        return await self.store.audit.verify()

    # --- reads --------------------------------------------------------------------------------------
    async def get(self, approval_id: str) -> dict | None:
        ap = await self.store.load(approval_id)
        return ap.model_dump(mode="json") if ap else None

    async def metrics(self) -> list[dict]:
        """Approvals by state, decision latency, actions by outcome (``actors.metrics`` dump)."""
        self.meter.clear("opsloop_approvals")
        for state, n in (await self.counts()).items():
            self.meter.set("opsloop_approvals", n, state=state)
        return self.meter.dump()

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ap in await self.store.listing(None, 500, time.time()):
            counts[ap.status] = counts.get(ap.status, 0) + 1
        return counts

    # last: inside the class, ``list`` below names this method, not the builtin
    async def list(self, status: str | None = None, limit: int = 500) -> list[dict]:
        """Approvals, newest first; pending ones past their expiry are shown (and stored) as expired."""
        return [ap.model_dump(mode="json") for ap in await self.store.listing(status, limit, time.time())]
