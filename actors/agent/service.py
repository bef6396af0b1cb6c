"""The agent's shell: read the event log through a consumer group, keep incidents, hand proposals on.

At-least-once in, idempotent out: an event is acknowledged only after its proposal (if any) was accepted
by the gateway; events already handled (by ``event_id``) are skipped; the incident book lives in Redis,
so a restarted agent carries on where the last one stopped. Proposal ids are stable, so a repeat is a
no-op at the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from actors.agent.bounds import cited_template
from actors.agent.incidents import FEEDBACK, Incident, IncidentBook
from actors.agent.instruments import TracedCompleter, TracedKnowledge
from actors.agent.planner import Knowledge, incident_facts, projects_shutdown
from actors.agent.proposals import Proposal, ProposedAction, proposal_id
from actors.agent.propose import Completer, propose
from actors.metrics import RATE_BUCKETS, Metrics
from actors.ports import Fleet
from actors.tracing import stage_span, traceparent_of
from actors.twin.eventlog import RedisEventLog
from actors.twin.events import Event
from knowledge.experience import Experience

log = logging.getLogger("opsloop.agent")

GROUP = "agent"
READ_BLOCK_MS = 1000
GATEWAY_TIMEOUT_S = 30.0
MODEL_WAIT_S = 900.0  # the LLM deployment's own start timeout: a model later than this is not coming


#: How an ``action_failed`` event's detail starts when the action ran but missed its predicted outcome
#: (``actors.gateway.execution.Execution.check_outcomes`` writes it), not when the actuator failed to carry it out.
OUTCOME_MISS = "outcome "


def replan_after(ev: Event) -> str | None:
    """Why the agent re-plans after the feedback event ``ev``: ``"rejected"`` (an operator's no), ``"failed"`` (the
    actuator could not carry the action out: a permanent failure, the actuator's retries spent); ``None`` for an
    executed action and for a missed outcome (it ran; the experience records the miss)."""
    if ev.kind == "action_rejected":
        return "rejected"
    if ev.kind == "action_failed" and not str(ev.data.get("detail") or "").startswith(OUTCOME_MISS):
        return "failed"
    return None


class ProposalSink(Protocol):
    async def submit(self, proposal: Proposal) -> object: ...  # the gateway's typed replies; the agent reads none


class AgentService:
    """Consumes events, groups them into incidents and submits verified proposals."""

    def __init__(
        self, redis_url: str, namespace: str, knowledge: Knowledge | Callable[[], Knowledge], gateway: ProposalSink,
        fleet: Fleet,
        consumer: str = "agent-1", batch: int = 100, llm: Completer | None = None,
        model_pending: bool = False, model_wait_s: float = MODEL_WAIT_S,
    ) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.ns = namespace
        self.log = RedisEventLog(self.redis, f"{namespace}:events")
        # A factory is accepted so that a large index is built where it is used, not shipped between processes.
        self.kb: Knowledge = knowledge if hasattr(knowledge, "for_event") else knowledge()  # type: ignore[operator]
        self.gateway = gateway
        self.fleet = fleet
        self.llm = llm  # None: the deterministic runbook mapping only (`--llm none`)
        # A model is on its way (``set_llm`` will bring it): incidents wait for it, except emergencies, which run
        # the step's own parameters anyway; after ``model_wait_s`` without it they go on with the runbook mapping.
        self.model_pending = model_pending
        self._model_deadline = time.monotonic() + model_wait_s if model_pending else None
        self.consumer = consumer
        self.batch = batch
        self.book = IncidentBook()
        self._loaded = False
        self._stop = asyncio.Event()
        self.handled = 0
        self.proposals = 0
        self.meter = Metrics()
        for name in ("opsloop_retrieval_latency_seconds", "opsloop_llm_ttft_seconds"):
            self.meter.declare(name)
        self.meter.declare("opsloop_llm_tokens_per_second", RATE_BUCKETS)

    async def _load(self) -> None:
        if not self._loaded:
            saved = await self.redis.get(f"{self.ns}:agent:book")
            if saved:
                self.book.load(json.loads(saved))
            self._loaded = True

    async def step(self, block_ms: int = READ_BLOCK_MS) -> int:
        """Handle one batch from the log; returns how many entries it handled."""
        await self._load()
        entries = await self.log.pending_for(GROUP, self.consumer, self.batch)  # ours from before a restart
        if not entries:
            entries = await self.log.read(GROUP, self.consumer, self.batch, block_ms)
        done_key = f"{self.ns}:agent:handled"
        for entry_id, ev in entries:
            if not await self.redis.sismember(done_key, ev.event_id):
                if ev.kind in FEEDBACK:
                    await self._feedback(ev)
                inc, needs = self.book.observe(ev)
                deferred = inc is not None and await self.redis.hexists(f"{self.ns}:agent:deferred", inc.incident_id)
                if inc is not None and (needs or deferred) and self._waits_for_model(inc):
                    await self.redis.hset(f"{self.ns}:agent:deferred", inc.incident_id, ev.model_dump_json())
                elif inc is not None and (needs or deferred):  # a waiting incident that turned urgent goes now
                    await self._submit(await self._proposal_for(inc, ev))
                    await self.redis.hdel(f"{self.ns}:agent:deferred", inc.incident_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(f"{self.ns}:agent:book", json.dumps(self.book.dump()))
                    pipe.sadd(done_key, ev.event_id)
                    await pipe.execute()
            await self.log.ack(GROUP, [entry_id])
            self.handled += 1
        return len(entries)

    async def set_llm(self, factory: Callable[[], Completer] | None) -> None:
        """Use a model from now on (built here, in the agent's process); None: the runbook mapping only. Incidents
        that waited for the model are planned now, each at its current revision."""
        self.llm = factory() if factory is not None else None
        await self._release_deferred()

    def _waits_for_model(self, inc: Incident) -> bool:
        if self.model_pending and self._model_deadline is not None:
            if time.monotonic() > self._model_deadline:
                log.warning("no model after %.0f s: planning with the runbook mapping", MODEL_WAIT_S)
                self.model_pending = False
        return self.model_pending and not projects_shutdown(incident_facts(inc))

    async def _release_deferred(self) -> None:
        await self._load()
        self.model_pending = False
        waiting = await self.redis.hgetall(f"{self.ns}:agent:deferred")
        for incident_id, raw in waiting.items():
            inc = self.book.find(incident_id.decode())
            if inc is not None and inc.status == "open":
                await self._submit(await self._proposal_for(inc, Event.model_validate_json(raw)))
            await self.redis.hdel(f"{self.ns}:agent:deferred", incident_id)

    async def _submit(self, proposal: Proposal) -> None:
        if not proposal.verified:  # nothing unverified reaches the gateway
            log.warning("proposal %s not verified: %s", proposal.proposal_id, proposal.problems)
            return
        if not proposal.actions:
            return
        await self.redis.hset(f"{self.ns}:agent:action_proposal",
                              mapping={a.action_id: proposal.proposal_id for a in proposal.actions})
        await asyncio.wait_for(self.gateway.submit(proposal), GATEWAY_TIMEOUT_S)
        self.proposals += 1

    async def _feedback(self, ev: Event) -> None:
        """An action of ours was executed, failed or rejected: record the decided incident as experience, and
        after a rejection, or a failure of the actuator (:func:`replan_after`), re-plan once with the operator's
        reason or the failure's in context."""
        pid = await self.redis.hget(f"{self.ns}:agent:action_proposal", str(ev.data.get("action_id")))
        stored = await self.redis.get(f"{self.ns}:agent:proposal:{pid.decode()}") if pid else None
        if not stored:
            return  # not one of ours (an operator's edit, or another agent's)
        proposal = Proposal.model_validate_json(stored)
        detail = str(ev.data.get("detail") or "")
        decision = "rejected" if ev.kind == "action_rejected" else "approved"
        inc = self.book.find(proposal.incident_id)
        events = [proposal.root_cause.model_dump(), *({"kind": k} for k in (inc.kinds if inc else {}))]
        self.kb.add_experience(Experience(
            incident_id=proposal.incident_id, events=events,
            proposal={"actions": [self._with_limits(a) for a in proposal.actions],
                      "rationale": proposal.diagnosis},
            decision=decision, reason=detail if decision == "rejected" else "",
            outcome=detail if decision == "approved" else "not executed",
        ))
        why = replan_after(ev)
        if why is not None and inc is not None and not inc.replanned:
            inc.replanned = True
            inc.revision += 1
            topology = await self.fleet.topology()
            again = await propose(inc, self.kb, topology, self.llm, feedback=detail or why,
                                  already=[a.action for a in proposal.actions], failed=why == "failed")
            await self.redis.set(f"{self.ns}:agent:proposal:{again.proposal_id}", again.model_dump_json())
            await self._submit(again)

    def _with_limits(self, a: ProposedAction) -> dict[str, object]:
        """An action as experience records it: with the limits of the step it followed, so a repeat obeys them."""
        template = cited_template(self.kb, a.action.kind, a.citations)
        limits = {k: v.model_dump(exclude_defaults=True, by_alias=True)
                  for k, v in (template.limits if template else {}).items()}
        return {**a.action.model_dump(mode="json"), **({"limits": limits} if limits else {})}

    async def _proposal_for(self, inc: Incident, trigger: Event | None = None) -> Proposal:
        """The proposal for this incident revision, made once: a restarted agent re-submits the stored one,
        so a model's non-deterministic answer can never turn into a second, different proposal.

        Traced as ``incident`` (continuing the root event's trace) with ``retrieval``, ``llm`` and ``proposal``
        inside; the proposal carries its span's traceparent on to the gateway."""
        key = f"{self.ns}:agent:proposal:{proposal_id(inc.incident_id, inc.revision)}"
        stored = await self.redis.get(key)
        if stored:
            return Proposal.model_validate_json(stored)
        topology = await self.fleet.topology()
        ids = {"opsloop.incident_id": inc.incident_id, "opsloop.revision": inc.revision}
        with stage_span("incident", "agent.incident", "agent", parent=inc.root_event.get("traceparent"),
                        links=(trigger.traceparent if trigger else None,),
                        attrs={**ids, "opsloop.root_cause": f"{inc.root_cause.kind} on {inc.root_cause.subject}",
                               "opsloop.event_id": trigger.event_id if trigger else None}):
            llm = TracedCompleter(self.llm, self.meter) if self.llm is not None else None
            proposal = await propose(inc, TracedKnowledge(self.kb, self.meter), topology, llm)
            attrs = {**ids, "opsloop.proposal_id": proposal.proposal_id, "opsloop.source": proposal.source,
                     "opsloop.verified": proposal.verified, "opsloop.actions": len(proposal.actions)}
            with stage_span("proposal", "agent.proposal", "agent", continue_current=True, attrs=attrs) as span:
                tp = traceparent_of(span)
        if tp:
            proposal = proposal.model_copy(update={"traceparent": tp})
        await self.redis.set(key, proposal.model_dump_json())
        return proposal

    async def run(self) -> None:
        """Loop until ``stop``; a failing batch is logged and retried (its entries stay pending)."""
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - keep the loop alive; entries stay pending and are retried
                log.exception("agent step failed; retrying")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stop.set()

    async def metrics(self) -> list[dict]:
        """Open incidents, proposals, retrieval latency and the model's TTFT and tokens/s (``actors.metrics``)."""
        await self._load()
        self.meter.set("opsloop_incidents_open", len(self.book.open))
        self.meter.set("opsloop_proposals_total", self.proposals)
        return self.meter.dump()

    async def status(self) -> dict:
        await self._load()
        return {
            "handled": self.handled,
            "proposals": self.proposals,
            "open_incidents": [
                {"incident_id": i.incident_id, "root_cause": i.root_cause.model_dump(), "hot": i.hot,
                 "events": len(i.event_ids)}
                for i in self.book.open.values()
            ],
        }
