"""Undo (issue #18 item 8): an executed action that has an inverse records it (the previous power limit or setpoint,
the resume of a drain), and an operator's undo opens a new approval of that inverse, citing the original, judged by
the same policy (the operator who asked is its proposer and cannot approve it)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.gateway.approvals import Approval
from actors.gateway.effects import Effect
from actors.gateway.service import GatewayService
from actors.gateway.undo import inverse
from actors.twin.physics import Topology
from cluster.actuators import SimActuator
from cluster.telemetry.samples import ActionResult
from cluster.telemetry.sim import Simulator, SimulatorService
from policies.actions import parse_action
from policies.policy import Policy, load_policy
from tests.gateway.test_service import CountingActuator, FakeFleet, opened, proposal, said

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SETPOINT = {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0}
CAP = {"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 300}


def executing(action: dict, effect: Effect | None = None) -> Approval:
    return Approval(approval_id="ap-0123456789ab", proposal_id="pr-1", incident_id="inc-1", action_id="act-1",
                    action=parse_action(action), action_hash="h", summary="s", rationale="r", status="executing",
                    policy="p", created_ts=1.0, updated_ts=1.0, effect=effect)


def ran(detail: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """An executed result as JSON; ``previous``: the values before as the actuator reported them (None: it did not)."""
    return {"status": "executed", "detail": detail, "previous": previous}


def test_the_inverse_is_the_value_before_as_the_actuator_the_twin_or_the_effect_says() -> None:
    back = inverse(executing(CAP), ran("on n01: gpu0 power limit 700 -> 300 W", {"watts": 700.0}))
    assert back == parse_action({**CAP, "watts": 700}), "the actuator's own word on what it changed from"
    modbus = inverse(executing(SETPOINT), ran("cu01 supply setpoint 24.5 → 21.0 °C, register 40001 on h:5020",
                                                 {"supply_c": 24.5}))
    assert modbus == parse_action({**SETPOINT, "supply_c": 24.5})
    twin = {"units": [{"unit": "cu01", "supply_c": 24.0, "setpoint_c": 25.0, "fan_pct": 60.0}]}
    assert inverse(executing(SETPOINT), ran("webhook: 200"), twin) == parse_action({**SETPOINT, "supply_c": 25.0})
    fan = {"kind": "set_fan_speed", "unit": "cu01", "percent": 90}
    assert inverse(executing(fan), ran("webhook: 200"), twin) == parse_action({**fan, "percent": 60})
    nvml = Effect(call="nvmlDeviceSetPowerManagementLimit(gpu0, 300000 mW)", where="NVML",
                  current="power limit 650 W (NVML)", new="power limit 300 W", reading={"watts": 650.0})
    assert inverse(executing(CAP, nvml), ran("webhook: 200")) == parse_action({**CAP, "watts": 650})


def test_no_inverse_when_the_value_before_is_unknown_the_same_out_of_bounds_or_it_did_not_run() -> None:
    unread = Effect(call="c", where="w", current="n01/gpu0 88.0 °C (the twin's latest reading; its power limit is "
                    "not reported)", new="n")
    assert inverse(executing(CAP, unread), ran("webhook: 200"), {"units": []}) is None
    assert inverse(executing(CAP), ran("gpu0 power limit 300 -> 300 W", {"watts": 300})) is None, "nothing changed"
    assert inverse(executing(CAP), ran("gpu0 power limit 50 -> 300 W", {"watts": 50})) is None, \
        "outside the catalogue's bounds"
    assert inverse(executing(CAP), ran("gpu0 power limit 700 -> 450 W")) is None, "another change's numbers"
    assert inverse(executing(CAP), {"status": "failed", "detail": "gpu0 power limit 700 -> 300 W",
                                     "previous": {"watts": 700}}) is None
    assert inverse(executing({"kind": "reset_gpu", "gpu": "n01/gpu0"}), ran("reset")) is None
    assert inverse(executing({"kind": "drain_node", "node": "n01"}), ran("drained")) == parse_action(
        {"kind": "resume_node", "node": "n01", "drained_by": "ap-0123456789ab"})


def test_the_value_before_is_data_never_read_back_from_the_words_and_older_results_load() -> None:
    words = ran("on n01: gpu0 power limit 700 -> 300 W")  # a result without ``previous``: its words are not parsed
    assert inverse(executing(CAP), words) is None
    unit = Effect(call="c", where="w", current="cu01 supply setpoint 25.0 °C (the twin's latest reading)", new="n")
    assert inverse(executing(SETPOINT, unit), ran("webhook: 200")) is None, "nor is an effect's"
    older = {"ts": 1.0, "action_id": "act-1", "approval_id": "ap-1", "action_kind": "set_power_limit",
             "status": "executed", "detail": "gpu0 power limit 700 -> 300 W"}  # recorded before ``previous`` was
    assert ActionResult.model_validate(older).previous is None
    assert inverse(executing(CAP), older) is None


def sim_gateway(redis_url: str, ns: str, policy: Policy | None = None) -> tuple[GatewayService, SimulatorService]:
    sim = SimulatorService(Simulator(Topology.build(2, 4)), speed=60.0)
    return GatewayService(redis_url, ns, policy or load_policy(), SimActuator(sim), fleet=FakeFleet()), sim


async def test_an_executed_setpoint_records_its_inverse_and_its_undo_is_a_new_approval_under_the_policy(
        redis_url: str) -> None:
    gw, sim = sim_gateway(redis_url, "ud")
    [ap] = await opened(gw, proposal(SETPOINT, pid="pr-u1"))
    done = (await gw.decide(ap.approval_id, said(ap))).approval
    assert done is not None and done.status == "executed" and (await sim.truth())["setpoint_c"] == [21.0]
    assert done.inverse == parse_action({**SETPOINT, "supply_c": 25.0}), done.result
    [entry] = [e for e in await gw.audit_entries(approval_id=ap.approval_id) if e["type"] == "execution"]
    assert entry["payload"]["inverse"] == {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 25.0}

    reply = await gw.undo(ap.approval_id, "carol", "http", "the strainer was the cause")
    undo = reply.approval
    assert undo is not None and undo.approval_id != ap.approval_id, reply
    assert (undo.status, undo.required, undo.action, undo.undo_of) == ("pending", 1, done.inverse, ap.approval_id)
    assert (undo.proposer, undo.source, undo.incident_id) == ("carol", "operator", ap.incident_id)
    assert undo.rationale == (f"undo of {ap.approval_id} (set_cooling_setpoint(unit=cu01, supply_c=21.0)), asked by "
                              "carol: the strainer was the cause")
    assert undo.effect is not None and undo.effect.new == "cu01 supply setpoint 25.0 °C"
    [opening] = [e for e in await gw.audit_entries(approval_id=undo.approval_id) if e["type"] == "proposal"]
    assert (opening["actor"], opening["channel"], opening["payload"]["undo_of"]) == ("carol", "http", ap.approval_id)
    assert (await gw.get(ap.approval_id))["undone_by"] == undo.approval_id  # type: ignore[index]
    again = await gw.undo(ap.approval_id, "dave", "http")
    assert again.approval is not None and again.approval.approval_id == undo.approval_id, "one undo at a time"

    mine = await gw.decide(undo.approval_id, said(undo, by="carol"))
    assert mine.refusal is not None and mine.refusal.code == "forbidden", "the asker approved their own undo"
    back = (await gw.decide(undo.approval_id, said(undo, by="alice"))).approval
    assert back is not None and back.status == "executed" and (await sim.truth())["setpoint_c"] == [25.0]
    assert back.inverse == parse_action(SETPOINT), "an undo is undone like any action (a redo)"


async def test_the_undo_follows_the_policy_auto_or_two_approvers(redis_url: str) -> None:
    policy = load_policy()
    policy = policy.model_copy(update={"rules": {**policy.rules, "set_cooling_setpoint": policy.rules["notify"]}})
    gw, sim = sim_gateway(redis_url, "ua", policy)
    [ap] = await opened(gw, proposal(SETPOINT, pid="pr-u2"))
    assert ap.status == "executed" and ap.inverse is not None
    undo = (await gw.undo(ap.approval_id, "carol")).approval
    assert undo is not None and undo.status == "executed", "auto by the policy: it runs at once"
    assert (await sim.truth())["setpoint_c"] == [25.0]

    gw2 = GatewayService(redis_url, "ub", load_policy(), CountingActuator(), fleet=FakeFleet())
    [drain] = await opened(gw2, proposal({"kind": "drain_node", "node": "n01"}, pid="pr-u3"))
    await gw2.decide(drain.approval_id, said(drain))
    drained = (await gw2.decide(drain.approval_id, said(drain, by="bob"))).approval
    assert drained is not None and drained.inverse == parse_action(
        {"kind": "resume_node", "node": "n01", "drained_by": drain.approval_id})
    resume = (await gw2.undo(drain.approval_id, "alice")).approval
    assert resume is not None and (resume.status, resume.required, resume.policy) == (
        "pending", 1, "resume_node: needs 1 approver (approver/admin)"), resume
    no = await gw2.decide(resume.approval_id, said(resume, "reject", by="bob", reason="the fan is not in yet"))
    assert no.approval is not None and no.approval.status == "rejected"
    anew = (await gw2.undo(drain.approval_id, "alice")).approval
    assert anew is not None and anew.status == "pending" and anew.approval_id != resume.approval_id, \
        "an undo that did not run may be proposed again"
    assert (await gw2.get(drain.approval_id))["undone_by"] == anew.approval_id  # type: ignore[index]


async def test_what_cannot_be_undone_is_refused_and_a_resume_must_undo_an_executed_drain(redis_url: str) -> None:
    gw = GatewayService(redis_url, "ur", load_policy(), CountingActuator(), fleet=FakeFleet())
    assert (await gw.undo("ap-000000000000", "carol")).refusal.code == "not_found"  # type: ignore[union-attr]
    [ap] = await opened(gw, proposal(SETPOINT, pid="pr-u4"))
    pending = (await gw.undo(ap.approval_id, "carol")).refusal
    assert pending is not None and pending.code == "conflict" and "it did not execute" in pending.message
    done = (await gw.decide(ap.approval_id, said(ap))).approval
    assert done is not None and done.inverse is None, "the test actuator says nothing of the value before"
    unknown = (await gw.undo(ap.approval_id, "carol")).refusal
    assert unknown is not None and "no recorded inverse" in unknown.message

    forged = await gw.submit(proposal({"kind": "resume_node", "node": "n01", "drained_by": ap.approval_id},
                                      pid="pr-u5"))
    assert forged[0].refusal is not None and "is not an executed drain of n01" in forged[0].refusal.message
    nowhere = await gw.submit(proposal({"kind": "resume_node", "node": "n01", "drained_by": "ap-00000000000f"},
                                       pid="pr-u6"))
    assert nowhere[0].refusal is not None and "there is no approval ap-00000000000f" in nowhere[0].refusal.message
