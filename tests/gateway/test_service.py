"""The gateway service on a real Redis: concurrency, two-person rule, deny, expiry, windows, blast radius,
emergencies, edits, users, restart, the audit trail and outcome checks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import redis

from actors.agent.incidents import RootCause
from actors.agent.proposals import Prediction, Proposal, ProposedAction
from actors.gateway.approvals import Approval
from actors.gateway.service import GatewayService
from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets, parse_action
from policies.policy import Policy, load_policy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

COOL = {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18.0}
APPROVER = {"role": "approver", "channel": "http"}


def said(ap: Approval, decision: str = "approve", by: str = "alice", **kw: object) -> dict:
    """A decision on ``ap`` as it was shown (its action hash), through the HTTP API, unless ``kw`` says else."""
    return {"decision": decision, "by": by, "action_hash": ap.action_hash, **APPROVER, **kw}


class CountingActuator:
    """Counts executions per action id; slow enough that concurrent callers overlap."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        self.calls.append(action_id)
        await asyncio.sleep(0.05)
        return ActionResult(ts=50.0, action_id=action_id, approval_id=approval_id, action_kind=action.kind,
                            targets=tuple(action_targets(action)), status="executed", detail="done")


class FakeFleet:
    def __init__(self) -> None:
        self.snap = {"ts": 50.0, "gpus": [{"gpu": f"n01/gpu{i}", "node": "n01", "sensed_c": 88.0} for i in range(4)],
                     "units": [{"unit": "cu01", "supply_c": 25.0}]}

    async def snapshot(self) -> dict:
        return self.snap

    async def topology(self) -> dict:
        return {"gpu": [g["gpu"] for g in self.snap["gpus"]], "node": ["n01", "n02"], "unit": ["cu01"]}


def proposal(*actions: dict, emergency: bool = False, prediction: Prediction | None = None, pid: str = "pr-1"):
    pas = tuple(ProposedAction(action_id=f"act-{pid}-{i}", action=parse_action(a), citations=(), rationale="t",
                               prediction=prediction) for i, a in enumerate(actions))
    return Proposal(proposal_id=pid, incident_id=f"inc-{pid}", ts=1.0, root_cause=RootCause(kind="k", subject="s",
                    why="w"), diagnosis="d", actions=pas, source="fallback", verified=True, confidence=0.5,
                    emergency=emergency)


def gateway(redis_url: str, policy: Policy | None = None, fleet: FakeFleet | None = None):
    act = CountingActuator()
    return GatewayService(redis_url, "g", policy or load_policy(), act, fleet=fleet), act


async def opened(gw: GatewayService, p: Proposal) -> list[Approval]:
    """The approvals a submitted proposal opened (one reply per action, none of them a refusal)."""
    replies = await gw.submit(p)
    assert all(r.approval is not None for r in replies), replies
    return [r.approval for r in replies]  # type: ignore[misc]


async def test_concurrent_approvals_execute_exactly_once(redis_url: str) -> None:
    gw, act = gateway(redis_url)
    [ap] = await opened(gw, proposal(COOL))
    aid = ap.approval_id
    answers = await asyncio.gather(*(gw.decide(aid, said(ap, by=f"op{i % 3}"))
                                     for i in range(6)))
    assert sum(a.approval is not None for a in answers) == 1 and len(act.calls) == 1
    # A second gateway process on the same Redis cannot decide it again either.
    other, act2 = gateway(redis_url)
    again = await other.decide(aid, said(ap, by="zed"))
    assert again.refusal is not None and again.refusal.code == "conflict" and act2.calls == []
    assert (await gw.get(aid))["status"] == "executed"


async def test_two_person_rule(redis_url: str) -> None:
    gw, act = gateway(redis_url)
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    aid = ap.approval_id
    assert ap.status == "pending" and ap.required == 2
    first = await gw.decide(aid, said(ap))
    assert first.approval is not None and first.approval.status == "pending"
    assert (await gw.decide(aid, said(ap))).as_json()["refusal"]["code"] == "conflict"
    assert (await gw.decide(aid, said(ap, by="agent"))).as_json()["refusal"]["code"] == "forbidden"
    assert act.calls == []
    done = await gw.decide(aid, said(ap, by="bob"))
    assert done.as_json()["approval"]["status"] == "executed" and len(act.calls) == 1


async def test_forbidden_and_expired_actions_never_execute(redis_url: str) -> None:
    pol = Policy.model_validate({"expiry_s": 0.2, "rules": {"set_cooling_setpoint": {"mode": "approve"},
                                                            "drain_node": {"mode": "deny"}}})
    gw, act = gateway(redis_url, pol)
    denied, pending = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}, COOL))
    assert denied.status == "denied"
    assert (await gw.decide(denied.approval_id, said(denied, by="a"))).refusal is not None
    await asyncio.sleep(0.3)
    late = (await gw.decide(pending.approval_id, said(pending, by="a"))).refusal
    assert late is not None and late.code == "conflict" and "expired" in late.message
    assert (await gw.get(pending.approval_id))["status"] == "expired" and act.calls == []
    types = [e["type"] for e in await gw.audit_entries(approval_id=pending.approval_id)]
    assert types == ["proposal", "expiry"]


async def test_restart_finds_pending_approvals_decidable(redis_url: str) -> None:
    gw, _ = gateway(redis_url)
    [ap] = await opened(gw, proposal(COOL))
    fresh, act = gateway(redis_url)
    assert [a["approval_id"] for a in await fresh.list("pending")] == [ap.approval_id]
    out = await fresh.decide(ap.approval_id, said(ap))
    assert out.approval is not None and out.approval.status == "executed" and len(act.calls) == 1


async def test_a_gateway_that_died_while_executing_is_resumed_once(redis_url: str) -> None:
    """Killed between "executing" and the result: the next gateway re-sends the action with the same id
    (actuators drop a repeat) and records it once, with its feedback sample, so the twin hears of it."""

    class Dies(CountingActuator):
        async def execute(self, *args: object, **kwargs: object) -> ActionResult:  # type: ignore[override]
            await super().execute(*args, **kwargs)  # type: ignore[arg-type]
            raise asyncio.CancelledError  # the process is gone before the result is recorded

    gw = GatewayService(redis_url, "g", load_policy(), Dies(), fleet=FakeFleet())
    [ap] = await opened(gw, proposal(COOL))
    aid = ap.approval_id
    with pytest.raises(asyncio.CancelledError):
        await gw.decide(aid, said(ap))
    assert (await gw.get(aid))["status"] == "executing"
    r = redis.Redis.from_url(redis_url)
    assert r.xlen("g:feedback") == 0

    fresh, act = gateway(redis_url, fleet=FakeFleet())
    assert await fresh.resume_executing() == [aid]
    assert await fresh.resume_executing() == []
    done = await fresh.get(aid)
    assert done["status"] == "executed" and act.calls == [ap.action_id]
    samples = [json.loads(f[b"sample"]) for _, f in r.xrange("g:feedback")]
    assert [(s["action_id"], s["status"]) for s in samples] == [(ap.action_id, "executed")]
    types = [e["type"] for e in await fresh.audit_entries(approval_id=aid)]
    assert types.count("execution") == 1


async def test_change_window_refuses_the_deciding_approval(redis_url: str) -> None:
    today = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[datetime.now(UTC).weekday()]
    other = [d for d in ("mon", "tue", "wed") if d != today][:1]
    pol = Policy.model_validate({"rules": {"set_cooling_setpoint": {"mode": "approve",
                                                                    "windows": [{"days": other}]}}})
    gw, act = gateway(redis_url, pol)
    [ap] = await opened(gw, proposal(COOL))
    out = (await gw.decide(ap.approval_id, said(ap))).refusal
    assert out is not None and out.code == "blocked" and "change window" in out.message
    after = await gw.get(ap.approval_id)
    assert after["status"] == "pending" and after["decisions"] == [] and act.calls == []


async def test_blast_radius_counts_executed_actions(redis_url: str) -> None:
    pol = Policy.model_validate({"rules": {"drain_node": {"mode": "approve", "max_per_hour": 1}}})
    gw, act = gateway(redis_url, pol)
    a1, a2 = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}, {"kind": "drain_node", "node": "n02"}))
    assert (await gw.decide(a1.approval_id, said(a1, by="x"))).approval is not None
    out = (await gw.decide(a2.approval_id, said(a2, by="x"))).refusal
    assert out is not None and out.code == "blocked" and "per hour" in out.message and len(act.calls) == 1


async def test_emergency_executes_at_once_and_notifies(redis_url: str) -> None:
    gw, act = gateway(redis_url, fleet=FakeFleet())
    cap = {"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 300.0}
    [ap] = await opened(gw, proposal(cap, emergency=True))
    assert ap.status == "executed" and ap.emergency and len(act.calls) == 1
    notes = redis.Redis.from_url(redis_url).xrange("g:notifications")
    assert len(notes) == 1 and b"EMERGENCY" in notes[0][1][b"message"]
    [ap2] = await opened(gw, proposal(cap, pid="pr-2"))
    assert ap2.status == "pending", "the same action without the emergency flag waits for a human"


async def test_edit_is_verified_judged_again_and_audited(redis_url: str) -> None:
    gw, act = gateway(redis_url, fleet=FakeFleet())
    [ap] = await opened(gw, proposal(COOL))
    aid = ap.approval_id
    bad = (await gw.edit(aid, {"supply_c": 5}, "oscar", "cli", "too cold")).as_json()
    assert bad["refusal"]["code"] == "invalid" and "supply_c" in bad["refusal"]["message"]
    ghost = (await gw.edit(aid, {"unit": "cu99"}, "oscar", "cli", "wrong unit")).as_json()
    assert ghost["refusal"]["code"] == "invalid" and "not in the fleet" in ghost["refusal"]["message"]
    ok = (await gw.edit(aid, {"supply_c": 15}, "oscar", "cli", "colder")).approval
    assert ok is not None and ok.status == "pending" and ok.action.supply_c == 15 and ok.proposer == "oscar"  # type: ignore[union-attr]
    own = await gw.decide(aid, said(ok, by="oscar"))
    assert own.refusal is not None and own.refusal.code == "forbidden"
    done = (await gw.decide(aid, said(ok))).approval
    assert done is not None and done.status == "executed" and act.calls == [ok.action_id]
    entries = await gw.audit_entries(approval_id=aid)
    assert [e["type"] for e in entries] == ["proposal", "edit", "decision", "execution"]
    assert (entries[1]["actor"], entries[1]["channel"]) == ("oscar", "cli")


async def test_users_tokens_authenticate_and_rotate(redis_url: str) -> None:
    gw, _ = gateway(redis_url)
    u = await gw.create_user("vera", "viewer", "admin")
    assert await gw.authenticate(u["token"]) == {"name": "vera", "role": "viewer"}
    raw = redis.Redis.from_url(redis_url).hgetall("g:users")
    assert u["token"].encode() not in b"".join(raw.values()), "tokens are stored hashed"
    u2 = await gw.create_user("vera", "approver", "admin")
    assert await gw.authenticate(u["token"]) is None
    assert await gw.authenticate(u2["token"]) == {"name": "vera", "role": "approver"}
    assert await gw.authenticate("olp_nonsense") is None


async def test_audit_trail_records_decisions_and_detects_tampering(redis_url: str) -> None:
    gw, _ = gateway(redis_url)
    a1, a2 = await opened(gw, proposal(COOL, {"kind": "set_fan_speed", "unit": "cu01", "percent": 90}))
    await gw.decide(a1.approval_id, said(a1, channel="slack"))
    await gw.decide(a2.approval_id, said(a2, "reject", "bob", reason="no"))
    assert (await gw.audit_verify()).ok
    decisions = [e for e in await gw.audit_entries(incident_id="inc-pr-1") if e["type"] == "decision"]
    assert [(e["actor"], e["channel"]) for e in decisions] == [("alice", "slack"), ("bob", "http")]

    r = redis.Redis.from_url(redis_url)
    [(sid, fields)] = [(s, f) for s, f in r.xrange("g:audit") if json.loads(f[b"e"])["actor"] == "alice"
                       and json.loads(f[b"e"])["type"] == "decision"]
    forged = json.loads(fields[b"e"])
    forged["actor"] = "mallory"
    r.xdel("g:audit", sid)
    new_sid = r.xadd("g:audit", {"e": json.dumps(forged, sort_keys=True, separators=(",", ":"))})
    report = await gw.audit_verify()
    assert not report.ok and report.problem is not None
    assert report.problem.seq == forged["seq"] and report.problem.stream_id == new_sid.decode()


async def test_outcome_met_missed_and_fed_back(redis_url: str) -> None:
    fleet = FakeFleet()
    gw, _ = gateway(redis_url, fleet=fleet)
    pred = Prediction(metric="max_sensed_c", subject="n01", below=84.0, within_s=90)
    ap1, ap2 = await opened(gw, proposal(COOL, {"kind": "set_fan_speed", "unit": "cu01", "percent": 90},
                                         prediction=pred))
    for ap in (ap1, ap2):
        await gw.decide(ap.approval_id, said(ap))
    assert await gw.check_outcomes() == []  # ts 50: just executed, nothing to judge yet
    fleet.snap = {**fleet.snap, "ts": 100.0}
    assert await gw.check_outcomes() == [], "88 °C after 50 s of 90: still waiting"
    fleet.snap = {**fleet.snap, "ts": 150.0}
    judged = await gw.check_outcomes()
    assert [j.outcome["verdict"] for j in judged if j.outcome] == ["missed", "missed"]
    assert judged[0].outcome == {"verdict": "missed", "observed": 88.0, "at_ts": 150.0, "elapsed_s": 100.0,
                                 "expected": "max_sensed_c of n01 below 84 within 90 s"}
    feedback = [ActionResult.model_validate_json(f[b"sample"]) for _, f in redis.Redis.from_url(redis_url).xrange(
        "g:feedback")]
    misses = [f for f in feedback if f.detail.startswith("outcome missed")]
    assert len(misses) == 2 and misses[0].status == "failed" and misses[0].ts == 150.0
    assert [e["type"] for e in await gw.audit_entries(approval_id=ap1.approval_id)][-1] == "outcome"

    [ap3] = await opened(gw, proposal(COOL, prediction=pred, pid="pr-3"))
    await gw.decide(ap3.approval_id, said(ap3))
    fleet.snap = {**fleet.snap, "ts": 60.0, "gpus": [{"gpu": "n01/gpu0", "node": "n01", "sensed_c": 80.0}]}
    [met] = await gw.check_outcomes()
    assert met.outcome is not None and met.outcome["verdict"] == "met" and await gw.check_outcomes() == []
