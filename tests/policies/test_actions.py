from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.actions import ACTION_KINDS, RISK, action_hash, action_targets, describe, parse_action


def test_every_kind_has_a_risk() -> None:
    assert set(ACTION_KINDS) == set(RISK)
    assert len(ACTION_KINDS) == 11


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "set_power_limit", "gpu": "n01/gpu3", "watts": 450},
        {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18},
        {"kind": "set_fan_speed", "unit": "cu01", "percent": 90},
        {"kind": "drain_node", "node": "n02"},
        {"kind": "cordon_gpu", "gpu": "n01/gpu0"},
        {"kind": "reset_gpu", "gpu": "n01/gpu7"},
        {"kind": "migrate_job", "job": "llm-train-7", "avoid": ["n01"]},
        {"kind": "disable_link", "link": "n01-n02/ib0"},
        {"kind": "open_ticket", "summary": "coolant flow low on n01", "severity": "high"},
        {"kind": "notify", "message": "n01 is running hot"},
    ],
)
def test_catalogue_accepts_each_kind(data: dict) -> None:
    action = parse_action(data)
    assert action.kind == data["kind"]
    assert parse_action(action.model_dump_json()) == action


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "format_disk", "node": "n01"},
        {"kind": "set_power_limit", "gpu": "n01/gpu3", "watts": 5000},
        {"kind": "set_power_limit", "gpu": "gpu3", "watts": 400},
        {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 2},
        {"kind": "drain_node", "node": "n01", "force": True},
        {"kind": "notify", "message": ""},
        {"kind": "set_power_limit", "gpu": "n01/gpu3", "watts": float("nan")},
    ],
)
def test_catalogue_refuses_bad_actions(data: dict) -> None:
    with pytest.raises(ValidationError):
        parse_action(data)


def test_hash_binds_exact_parameters() -> None:
    a = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu3", "watts": 450})
    b = parse_action({"gpu": "n01/gpu3", "watts": 450.0, "kind": "set_power_limit"})
    c = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu3", "watts": 451})
    assert action_hash(a) == action_hash(b) != action_hash(c)
    assert action_targets(a) == ["n01/gpu3"]
    assert describe(a) == "set_power_limit(gpu=n01/gpu3, watts=450.0)"
