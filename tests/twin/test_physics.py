"""The physics against closed forms and the seed's controller behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actors.twin.physics import POWER_STEP_MHZ_PER_S, THERMAL_CUT, FleetPhysics, Topology, lag_alpha


@pytest.mark.parametrize("tau", [10.0, 15.0, 20.0])
@pytest.mark.parametrize("dt", [0.1, 1.0])
def test_sensor_lag_closed_form(tau: float, dt: float) -> None:
    """A step of the true temperature: the sensor shows 63.2 % of it at τ and 86.5 % at 2τ."""
    p = FleetPhysics(Topology.build(1, 1), sensor_tau_s=tau)
    start = float(p.sensed_c[0])
    p.temp_c[:] = start + 10.0
    fractions = {}
    t = 0.0
    while t < 2 * tau - 1e-9:
        p.sensed_c += (p.temp_c - p.sensed_c) * lag_alpha(dt, tau)
        t += dt
        if math.isclose(t, tau, abs_tol=1e-6) or math.isclose(t, 2 * tau, abs_tol=1e-6):
            fractions[round(t / tau)] = float((p.sensed_c[0] - start) / 10.0)
    assert fractions[1] == pytest.approx(1 - math.exp(-1), rel=0.005)
    assert fractions[2] == pytest.approx(1 - math.exp(-2), rel=0.005)
    assert fractions[1] == pytest.approx(0.632, abs=0.005) and fractions[2] == pytest.approx(0.865, abs=0.005)


def test_power_controller_is_slow_and_linear() -> None:
    p = FleetPhysics(Topology.build(1, 1))
    p.power_limit_w[:] = 400.0
    clocks = [float(p.clock_mhz[0])]
    for _ in range(5):
        p.step(1.0)
        clocks.append(float(p.clock_mhz[0]))
    steps = np.diff(clocks)
    assert np.allclose(steps, -POWER_STEP_MHZ_PER_S)  # a straight line down, one slew per second
    for _ in range(60):
        p.step(1.0)
    assert float(p.power_w[0]) == pytest.approx(400.0, rel=0.01)  # it settles at the limit
    assert "sw_power_cap" in p.throttle_reasons(0) or p.power_capped[0]


def test_thermal_controller_is_fast_and_hard() -> None:
    p = FleetPhysics(Topology.build(1, 1))
    before = float(p.clock_mhz[0])
    p.temp_c[:] = p.slowdown_c + 0.5
    p.step(1.0)
    after = float(p.clock_mhz[0])
    assert after == pytest.approx(before * THERMAL_CUT, rel=1e-6)  # one step, a multiplicative cut
    assert before - after > 3 * POWER_STEP_MHZ_PER_S  # far harder than the power controller's slew
    assert "hw_thermal_slowdown" in p.throttle_reasons(0)


def test_priority_gate_takes_the_lower_clock() -> None:
    p = FleetPhysics(Topology.build(1, 2))
    p.power_limit_w[0] = 300.0
    for _ in range(30):
        p.step(1.0)
    power_only = float(p.clock_mhz[0])
    p.temp_c[0] = p.slowdown_c[0] + 1
    p.step(1.0)
    assert float(p.clock_mhz[0]) < power_only
    assert float(p.clock_mhz[1]) == pytest.approx(float(p.f_max[1]))


def test_power_follows_dvfs_cube_and_energy_accumulates() -> None:
    p = FleetPhysics(Topology.build(1, 1))
    p.thermal_cap_mhz[:] = p.f_max * 0.5
    p.step(1.0)
    ratio = float(p.clock_mhz[0] / p.f_max[0])
    assert ratio < 0.6
    expected = p.idle_w + (p.tdp_w - p.idle_w) * ratio**3
    assert float(p.power_w[0]) == pytest.approx(float(expected[0]))
    assert float(p.energy_j[0]) == pytest.approx(float(p.power_w[0]) * 1.0)
    assert float(p.work_lost[0]) == pytest.approx(1.0 - ratio)


def test_less_coolant_flow_means_hotter_gpus() -> None:
    p = FleetPhysics(Topology.build(2, 2))
    p.flow_frac[0] = 0.5
    for _ in range(300):
        p.step(1.0)
    assert float(p.temp_c[0]) > float(p.temp_c[2]) + 10
    state = p.state_dict()
    q = FleetPhysics(Topology.build(2, 2))
    q.load_state(state)
    assert np.array_equal(q.temp_c, p.temp_c)
