"""The what-if runs the GPU's reported power and reports the die, facility kW and PUE change of every action
(actors/agent/whatif.py); a supply setpoint below the dew point is refused (actors/agent/bounds.py)."""

from __future__ import annotations

import math

import pytest

from actors.agent.bounds import DEFAULT_DEW_POINT_C, check_bounds, step_bounds
from actors.agent.whatif import NODE_GPUS, THERMAL_KINDS, predict
from actors.twin.loop import FAN_SHARE, PUMP_SHARE, cop
from actors.twin.physics import LEAK_DOUBLING_C, LEAK_SHARE, R_BASE_K_PER_W, R_FLOW_K_PER_W
from knowledge.documents import ActionTemplate
from policies.actions import parse_action

#: A cool GPU at 400 W on a healthy unit at 25 °C: nothing throttles, so every settled value has a closed form.
FACTS = {"setpoint_c": 25.0, "supply_c": 25.0, "power_w": 400.0, "max_operating_c": 87.0, "slowdown_c": 89.0,
         "node": "n01", "est_c": 53.0, "sensed_c": 53.0, "model": "H100-SXM"}
R = R_BASE_K_PER_W + R_FLOW_K_PER_W  # die to coolant at nominal flow and fan speed
TDP_W = 700.0


def settled(supply_c: float, power_w: float, die_c: float) -> tuple[float, float]:
    """The die and power a GPU settles at: ``T = supply + R·P(T)``, where ``P`` is the ``power_w`` it reported with
    its die at ``die_c`` plus the change in its leakage (LEAK_SHARE of TDP at slowdown, doubling every
    LEAK_DOUBLING_C; the plant's documented law), solved by iteration (a contraction: R·dP/dT ≈ 0.05)."""
    leak = lambda t: LEAK_SHARE * TDP_W * 2 ** ((t - FACTS["slowdown_c"]) / LEAK_DOUBLING_C)  # noqa: E731
    t = supply_c + power_w * R
    for _ in range(50):
        p = power_w + leak(t) - leak(die_c)
        t = supply_c + p * R
    return t, p

ACTIONS = {
    "set_cooling_setpoint": {"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 22.0},
    "set_fan_speed": {"kind": "set_fan_speed", "unit": "cu01", "percent": 100.0},
    "set_power_limit": {"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 300.0},
    "cordon_gpu": {"kind": "cordon_gpu", "gpu": "n01/gpu0"},
    "drain_node": {"kind": "drain_node", "node": "n01"},
}


def test_the_what_if_runs_the_power_the_gpu_reports_not_its_tdp() -> None:
    setpoint = parse_action(ACTIONS["set_cooling_setpoint"])
    at_400 = predict(setpoint, FACTS)
    # Each GPU settled at the power it reports (the plant's leakage depends on the die, so a GPU reporting 650 W
    # with its die at 53 °C would warm and draw more: the facts are those of a GPU already there).
    at_650 = predict(setpoint, {**FACTS, "power_w": 650.0, "est_c": 25.0 + 650.0 * R, "sensed_c": 25.0 + 650.0 * R})
    assert at_400 is not None and at_650 is not None
    assert at_400.without_action == pytest.approx(25.0 + 400.0 * R, abs=0.15)  # the die at supply + P·R
    assert at_650.without_action == pytest.approx(25.0 + 650.0 * R, abs=0.15)


def test_every_what_if_reports_the_die_the_facility_kw_and_the_pue() -> None:
    assert set(ACTIONS) == THERMAL_KINDS
    for kind, raw in ACTIONS.items():
        p = predict(parse_action(raw), FACTS)
        assert p is not None, kind
        for field in ("die_change_c", "facility_kw", "facility_kw_change", "pue", "pue_change"):
            assert isinstance(getattr(p, field), float), (kind, field)
        assert p.pue > 1.0 and p.facility_kw > 0, kind
        assert "die " in p.text and " kW" in p.text and "PUE" in p.text, p.text


def test_a_colder_setpoint_cools_the_die_by_as_much_and_costs_chiller_kw() -> None:
    """3 °C colder supply: the die drops those 3 °C and a little more (a cooler die leaks less, ~0.2 °C here), and
    the chiller removes about the same heat at a worse COP."""
    p = predict(parse_action(ACTIONS["set_cooling_setpoint"]), FACTS)
    assert p is not None
    (die_25, w_25), (die_22, w_22) = settled(25.0, 400.0, 53.0), settled(22.0, 400.0, 53.0)
    assert die_22 - die_25 < -3.1  # the leakage's share is one the what-if must show, not round away
    assert p.die_change_c == pytest.approx(die_22 - die_25, abs=0.1)
    it_25, it_22 = NODE_GPUS * w_25, NODE_GPUS * w_22
    chiller_kw = (it_22 / float(cop(22.0)) - it_25 / float(cop(25.0))) / 1000  # ~ the same heat at a worse COP
    assert p.facility_kw_change == pytest.approx(chiller_kw, abs=0.002) and p.facility_kw_change > 0
    movers_w = (PUMP_SHARE + FAN_SHARE) * NODE_GPUS * TDP_W  # pumps and fans at nominal speed, unchanged
    pue = lambda it, supply: 1 + (it / float(cop(supply)) + movers_w) / it  # noqa: E731
    assert p.pue_change == pytest.approx(pue(it_22, 22.0) - pue(it_25, 25.0), abs=0.002)


def test_faster_fans_follow_the_affinity_law() -> None:
    p = predict(parse_action(ACTIONS["set_fan_speed"]), FACTS)
    assert p is not None
    movers_kw = (PUMP_SHARE + FAN_SHARE) * NODE_GPUS * TDP_W / 1000
    assert p.facility_kw_change == pytest.approx(movers_kw * ((100 / 70) ** 3 - 1), abs=0.005)
    assert p.die_change_c == pytest.approx(400.0 * R_FLOW_K_PER_W * (math.sqrt(70 / 100) - 1), abs=0.15)


def test_taking_load_off_cools_the_die_and_raises_the_pue() -> None:
    """Pumps and fans do not slow down with the load: less IT under the same overhead is a worse PUE."""
    for kind in ("cordon_gpu", "drain_node", "set_power_limit"):
        p = predict(parse_action(ACTIONS[kind]), FACTS)
        assert p is not None and p.die_change_c < -5 and p.facility_kw_change < 0 and p.pue_change > 0, (kind, p)


def setpoint(supply_c: float):
    return parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": supply_c})


def test_a_setpoint_below_the_dew_point_is_refused_with_the_reason() -> None:
    refused = check_bounds(setpoint(DEFAULT_DEW_POINT_C - 1), {}, {})
    assert len(refused) == 1 and "dew point" in refused[0] and "ASHRAE" in refused[0], refused
    assert check_bounds(setpoint(DEFAULT_DEW_POINT_C + 1), {}, {}) == []
    reported = check_bounds(setpoint(20.0), {}, {"dew_point_c": 21.0})
    assert len(reported) == 1 and "the dew point 21 °C the incident reports" in reported[0], reported
    assert check_bounds(setpoint(13.0), {}, {"dew_point_c": 10.0}) == [], "a dry room allows a colder supply"


def test_a_step_allowing_a_colder_supply_is_narrowed_to_the_dew_point() -> None:
    """A runbook step that would go to 12 °C: the bound the planner picks from stops at the dew point."""
    t = ActionTemplate.model_validate({"kind": "set_cooling_setpoint", "step": "s1", "params": {"unit": "{unit}"},
                                       "limits": {"supply_c": {"min": 12, "max": 30, "unit": "°C"}}})
    bounds, problems = step_bounds(t, {"unit": "cu01"})
    assert problems == [] and bounds["supply_c"].lo == DEFAULT_DEW_POINT_C
    assert "dew point" in bounds["supply_c"].text


def test_a_throttled_gpus_power_is_read_at_the_clock_it_reported() -> None:
    # n01 at half flow with its dies cut by the hardware slowdown (the embedded demo fault, as the twin reported it
    # at sim second 66): 482 W at 1300 MHz is a full job at a cut clock, not a light one. Read at full clock it
    # would settle far under max operating, and the what-if would promise what the plant does not do.
    hot = {**FACTS, "flow_frac": 0.5, "power_w": 482.5, "est_c": 90.4, "sensed_c": 86.2}
    setpoint = parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 21.0})
    at_full_clock = predict(setpoint, hot)
    at_its_clock = predict(setpoint, {**hot, "clock_mhz": 1300.0})
    assert at_full_clock is not None and at_its_clock is not None
    assert at_its_clock.settles_at > at_full_clock.settles_at + 10, (at_its_clock.text, at_full_clock.text)
    assert at_its_clock.metric == "max_est_c", "half a flow is not brought back under the line by 4 °C"
