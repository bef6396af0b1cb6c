"""What will run, shown before it runs (issue #18 item 7): the gateway asks the actuator for the exact effect when it
opens an approval and again on an edit, keeps it on the approval and puts the same text in the audit entry; the twin
fills in the value now when the actuator does not read it; a backend that is slow or fails makes it unknown, never a
lost approval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.gateway import service as gateway_service
from actors.gateway.approvals import Approval
from actors.gateway.effects import Effect, fallback, new_value, twin_current
from actors.gateway.service import GatewayService
from policies.actions import Action, describe, parse_action
from policies.policy import Policy, load_policy
from tests.gateway.test_service import COOL, CountingActuator, FakeFleet, opened, proposal, said

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class StatingActuator(CountingActuator):
    """States a made-up call per action (``current``: what it reads, ``None``: nothing); slow or failing on demand."""

    def __init__(self, current: str | None = "25.0 °C (read now)", delay: float = 0.0, fail: bool = False) -> None:
        super().__init__()
        self.current, self.delay, self.fail = current, delay, fail
        self.asked: list[tuple[str, str]] = []

    async def effect(self, action: Action, approval_id: str) -> Effect:
        self.asked.append((describe(action), approval_id))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("backend exploded")
        return Effect(call=f"do {describe(action)} as {approval_id}", where="the test backend", current=self.current,
                      new=new_value(action))


def gateway(redis_url: str, act: Any, policy: Policy | None = None) -> GatewayService:
    return GatewayService(redis_url, "fx", policy or load_policy(), act, fleet=FakeFleet())


async def proposal_entry(gw: GatewayService, ap: Approval, kind: str = "proposal") -> dict:
    [entry] = [e for e in await gw.audit_entries(approval_id=ap.approval_id) if e["type"] == kind]
    return entry


def test_the_text_is_composed_from_the_parts_and_always_follows_them() -> None:
    e = Effect(call="scontrol update NodeName=n01 State=DRAIN", where="slurmctld", current="IDLE", new="drained")
    assert e.text == "scontrol update NodeName=n01 State=DRAIN on slurmctld — current: IDLE; new: drained"
    assert Effect.model_validate({**e.model_dump(), "text": "forged"}) == e  # a stored text is derived again
    unread = Effect(call="c", where="w", new="n")
    assert unread.current is None and unread.text == "c on w — current: unknown; new: n"
    assert unread.with_current("7 %").text == "c on w — current: 7 %; new: n"


def test_the_twin_gives_the_value_now_of_what_it_reads() -> None:
    snap = {"units": [{"unit": "cu01", "supply_c": 24.3, "setpoint_c": 25.0, "fan_pct": 60.0}],
            "gpus": [{"gpu": "n01/gpu0", "node": "n01", "sensed_c": 88.04, "power_w": 612.3},
                     {"gpu": "n01/gpu1", "node": "n01", "sensed_c": 70.0, "power_w": None}]}
    seen = "(the twin's latest reading)"

    def now(action: dict) -> str:
        return twin_current(parse_action(action), snap)

    assert now(COOL) == f"cu01 supply setpoint 25.0 °C {seen}"
    assert now({"kind": "set_fan_speed", "unit": "cu01", "percent": 85}) == f"cu01 fan speed 60 % {seen}"
    assert now({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 450}) == (
        "n01/gpu0 88.0 °C, drawing 612 W (the twin's latest reading; its power limit is not reported)")
    assert now({"kind": "reset_gpu", "gpu": "n01/gpu1"}) == f"n01/gpu1 70.0 °C {seen}"
    assert now({"kind": "drain_node", "node": "n01"}) == f"n01 in service, 2 GPU(s), hottest 88.0 °C {seen}"
    assert now({"kind": "notify", "message": "hi"}) == "n/a (nothing in the fleet changes)"
    assert now({**COOL, "unit": "cu09"}) == "unknown (the twin has no reading of cu09)"
    assert now({"kind": "drain_node", "node": "n07"}) == "unknown (the twin has no reading of n07)"
    assert now({"kind": "disable_link", "link": "n01/ib0"}) == (
        "unknown (the twin does not report the state of this link)")


async def test_the_approval_carries_the_effect_and_the_proposal_entry_the_same_text(redis_url: str) -> None:
    act = StatingActuator()
    gw = gateway(redis_url, act)
    [ap] = await opened(gw, proposal(COOL))
    assert ap.status == "pending" and act.calls == [], "stated, not run"
    assert act.asked == [("set_cooling_setpoint(unit=cu01, supply_c=18.0)", ap.approval_id)]
    text = (f"do set_cooling_setpoint(unit=cu01, supply_c=18.0) as {ap.approval_id} on the test backend — "
            "current: 25.0 °C (read now); new: cu01 supply setpoint 18.0 °C")
    assert ap.effect is not None and ap.effect.text == text
    assert (await gw.get(ap.approval_id))["effect"]["text"] == text  # what every surface reads
    assert (await proposal_entry(gw, ap))["payload"]["effect"] == text
    assert (await gw.audit_verify()).ok
    await opened(gw, proposal(COOL))  # a repeat opens nothing and asks nothing
    assert len(act.asked) == 1

    # an action that runs at once (notify is auto) is audited with its effect too, before it runs
    [auto] = await opened(gw, proposal({"kind": "notify", "message": "heads up"}, pid="pr-2"))
    assert auto.status == "executed" and auto.effect is not None
    assert (await proposal_entry(gw, auto))["payload"]["effect"] == auto.effect.text


async def test_what_the_actuator_does_not_read_comes_from_the_twin(redis_url: str) -> None:
    gw = gateway(redis_url, StatingActuator(current=None))
    [ap] = await opened(gw, proposal(COOL))
    assert ap.effect is not None  # FakeFleet's unit reports its supply but no setpoint
    assert ap.effect.current == "cu01 supply 25.0 °C, its setpoint not reported (the twin's latest reading)"

    bare = gateway(redis_url, CountingActuator())  # states nothing: the action as catalogued, on "the actuator"
    [ap2] = await opened(bare, proposal(COOL, pid="pr-2"))
    assert ap2.effect == fallback(parse_action(COOL), "it does not state its calls").with_current(
        "cu01 supply 25.0 °C, its setpoint not reported (the twin's latest reading)")
    assert ap2.effect.text.startswith("set_cooling_setpoint(unit=cu01, supply_c=18.0) on the configured actuator")


async def test_a_slow_or_failing_backend_makes_it_unknown_and_loses_nothing(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_service, "EFFECT_TIMEOUT_S", 0.2)
    slow = StatingActuator(delay=30.0)
    gw = gateway(redis_url, slow)
    [ap] = await opened(gw, proposal(COOL))
    assert ap.status == "pending" and ap.effect is not None
    assert ap.effect.where == "the configured actuator (it stated nothing within 0.2 s)"
    assert "(the twin's latest reading)" in (ap.effect.current or "")
    assert (await gw.decide(ap.approval_id, said(ap))).approval.status == "executed"  # type: ignore[union-attr]

    broken = gateway(redis_url, StatingActuator(fail=True))
    [ap2] = await opened(broken, proposal(COOL, pid="pr-2"))
    assert ap2.status == "pending" and ap2.effect is not None
    assert "stating it failed: RuntimeError: backend exploded" in ap2.effect.where


async def test_an_edit_states_the_edited_action_and_audits_it(redis_url: str) -> None:
    act = StatingActuator()
    gw = gateway(redis_url, act)
    [ap] = await opened(gw, proposal(COOL))
    reply = await gw.edit(ap.approval_id, {"supply_c": 20.0}, by="bob", reason="less")
    new = reply.approval
    assert new is not None and new.effect is not None and new.effect != ap.effect
    assert new.effect.new == "cu01 supply setpoint 20.0 °C" and new.effect.call.startswith(
        "do set_cooling_setpoint(unit=cu01, supply_c=20.0)")
    assert act.asked[-1] == ("set_cooling_setpoint(unit=cu01, supply_c=20.0)", ap.approval_id)
    assert (await proposal_entry(gw, new, "edit"))["payload"]["effect"] == new.effect.text
    asked = len(act.asked)
    refused = await gw.edit(ap.approval_id, {"supply_c": 99.0}, by="bob", reason="typo")
    assert refused.refusal is not None and len(act.asked) == asked, "an action that does not validate is not asked"


async def test_a_denied_action_states_nothing(redis_url: str) -> None:
    act = StatingActuator()
    pol = Policy.model_validate({"rules": {"drain_node": {"mode": "deny"}}})
    gw = gateway(redis_url, act, pol)
    [ap] = await opened(gw, proposal({"kind": "drain_node", "node": "n01"}))
    assert ap.status == "denied" and ap.effect is None and act.asked == []
    assert (await proposal_entry(gw, ap))["payload"]["effect"] == ""
