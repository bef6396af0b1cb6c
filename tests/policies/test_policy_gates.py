"""Policy beyond modes: risk rules, emergencies, change windows, blast radius, roles and expiry (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.actions import parse_action
from policies.policy import Executed, Policy, PolicyError, load_policy

DRAIN = parse_action({"kind": "drain_node", "node": "n01"})
CAP = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 400})
COOL = parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18})


def ts(day: int, hh: int, mm: int = 0) -> float:
    """Epoch seconds of 2025-06-(day) hh:mm UTC (2025-06-02 is a Monday)."""
    return datetime(2025, 6, day, hh, mm, tzinfo=UTC).timestamp()


def policy(**rules: dict) -> Policy:
    return Policy.model_validate({"rules": rules})


def test_risk_rules_cover_unnamed_kinds_and_kind_rules_win() -> None:
    p = Policy.model_validate({"rules": {"drain_node": {"mode": "deny"}}, "risks": {"high": {"mode": "approve",
                                                                                              "approvers": 2}}})
    assert p.evaluate(DRAIN).mode == "deny"
    reset = p.evaluate(parse_action({"kind": "reset_gpu", "gpu": "n01/gpu0"}))
    assert (reset.mode, reset.approvers) == ("approve", 2)
    assert p.evaluate(COOL).mode == "deny", "medium risk is named nowhere: default deny"


def test_emergency_runs_listed_kinds_at_once_only_when_flagged() -> None:
    p = load_policy()
    assert p.evaluate(CAP).mode == "approve"
    v = p.evaluate(CAP, emergency=True)
    assert v.mode == "auto" and v.emergency and "emergency" in v.reason
    assert p.evaluate(COOL, emergency=True).mode == "approve", "only the emergency kinds skip approval"


def test_change_window_holds_execution_outside_it_and_emergency_bypasses() -> None:
    p = Policy.model_validate({
        "rules": {"drain_node": {"mode": "approve", "windows": [{"days": ["mon", "tue"], "start": "09:00",
                                                                  "end": "17:00"}]}},
        "emergency": {"kinds": ["drain_node"]},
    })
    assert p.gate(DRAIN, ts(2, 10)) is None
    msg = p.gate(DRAIN, ts(2, 17, 30))
    assert msg and "change window" in msg and "mon,tue 09:00-17:00 UTC" in msg
    assert p.gate(DRAIN, ts(4, 10)) is not None, "wednesday is outside"
    assert p.gate(DRAIN, ts(4, 10), emergency=True) is None


def test_blast_radius_nodes_per_hour() -> None:
    p = policy(drain_node={"mode": "approve", "max_per_hour": 1})
    now = ts(2, 12)
    assert p.gate(DRAIN, now, [Executed(ts=now - 7200, target="n02")]) is None
    msg = p.gate(DRAIN, now, [Executed(ts=now - 60, target="n02")])
    assert msg and "at most 1 target(s) per hour" in msg
    assert p.gate(DRAIN, now, [Executed(ts=now - 60, target="n01")]) is None, "the same node again is no wider"


def test_blast_radius_fraction_of_fleet_power_capped() -> None:
    p = policy(set_power_limit={"mode": "approve", "max_fleet_frac": 0.25})
    now = ts(2, 12)
    capped = [Executed(ts=now - 10, target=f"n01/gpu{i}") for i in (1, 2, 3)]
    assert p.gate(CAP, now, capped, fleet={"gpu": 16}) is None  # 4 of 16
    msg = p.gate(CAP, now, [*capped, Executed(ts=now - 5, target="n01/gpu4")], fleet={"gpu": 16})
    assert msg and "25%" in msg and "16 gpus" in msg
    assert "unknown" in (p.gate(CAP, now, [], fleet=None) or ""), "no fleet size: fail closed"


def test_roles_and_expiry_per_rule() -> None:
    p = Policy.model_validate({"expiry_s": 600, "rules": {
        "reset_gpu": {"mode": "approve", "approvers": 2, "roles": ["admin"], "expiry_s": 60}}})
    v = p.evaluate(parse_action({"kind": "reset_gpu", "gpu": "n01/gpu0"}))
    assert (v.roles, v.expiry_s, v.approvers) == (("admin",), 60, 2)


@pytest.mark.parametrize("text", [
    "rules:\n  drain_node: {mode: approve, windows: [{start: '17:00', end: '09:00'}]}\n",
    "rules:\n  drain_node: {mode: approve, windows: [{days: [someday]}]}\n",
    "rules:\n  drain_node: {mode: approve, roles: [root]}\n",
    "emergency: {kinds: [format_disk]}\n",
    "rules:\n  set_power_limit: {mode: approve, max_fleet_frac: 2}\n",
])
def test_bad_gates_are_refused_at_load(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError, match="bad.yaml"):
        load_policy(f)
