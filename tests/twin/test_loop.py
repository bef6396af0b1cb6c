"""The coolant loop's heat balance against its closed forms (actors/twin/loop.py), alone and inside the plant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actors.twin.loop import APPROACH_K, C_P_WATER, COP_PER_K, COP_REF, COP_REF_C, CoolantLoop, cop
from actors.twin.physics import FleetPhysics, Topology

RATED_W = 8 * 700.0
TAU_S = 30.0


def one_unit(nodes: int = 2) -> CoolantLoop:
    return CoolantLoop(np.zeros(nodes, int), np.array([RATED_W]), TAU_S, 70.0)


class Run:
    """One unit's loop and its state, stepped with a fixed IT heat."""

    def __init__(self, supply_c: float = 20.0, setpoint_c: float = 20.0, loss_c: float = 0.0,
                 speed_pct: float = 70.0, flow: tuple[float, ...] = (1.0, 1.0)) -> None:
        self.loop = one_unit(len(flow))
        self.supply, self.setpoint = np.array([supply_c]), np.array([setpoint_c])
        self.loss, self.speed, self.flow = np.array([loss_c]), np.array([speed_pct]), np.array(flow)
        self.s_sup, self.s_ret = self.supply.copy(), self.supply.copy()

    def step(self, it_w: float, seconds: float, dt: float = 1.0):
        for _ in range(round(seconds / dt)):
            r = self.loop.step(dt, np.array([it_w]), self.supply, self.setpoint, self.loss, self.speed, self.flow,
                               self.s_sup, self.s_ret)
        return r


def test_steady_return_is_supply_plus_heat_over_flow_times_cp() -> None:
    run = Run()
    r = run.step(0.6 * RATED_W, 600)
    m_dot = RATED_W / (C_P_WATER * 10.0)  # nominal flow: 10 K across the rated heat
    assert r.flow_kg_s[0] == pytest.approx(m_dot)
    assert r.return_c[0] - run.supply[0] == pytest.approx(0.6 * RATED_W / (m_dot * C_P_WATER))  # 6 K
    assert run.s_ret[0] == pytest.approx(r.return_c[0], abs=1e-6)  # the sensor has caught up
    # half the flow to one of two nodes: the unit passes 3/4 of nominal and the coolant comes back 8 K warmer
    half = Run(flow=(1.0, 0.5)).step(0.6 * RATED_W, 600)
    assert half.return_c[0] - 20.0 == pytest.approx(6.0 / 0.75)


def test_affinity_laws_flow_goes_with_speed_power_with_its_cube() -> None:
    nominal, doubled = Run(speed_pct=50.0).step(RATED_W / 2, 60), Run(speed_pct=100.0).step(RATED_W / 2, 60)
    assert doubled.flow_kg_s[0] / nominal.flow_kg_s[0] == pytest.approx(2.0)
    assert doubled.pumps_w[0] / nominal.pumps_w[0] == pytest.approx(8.0)
    assert doubled.fans_w[0] / nominal.fans_w[0] == pytest.approx(8.0)
    assert (doubled.return_c - 20.0)[0] == pytest.approx((nominal.return_c - 20.0)[0] / 2)


def test_a_unit_with_enough_capacity_holds_its_setpoint_through_a_step_of_heat() -> None:
    run = Run()
    run.step(0.3 * RATED_W, 300)
    r = run.step(RATED_W, 300)  # up to its rating
    assert run.supply[0] == pytest.approx(20.0, abs=1e-9)
    assert r.removed_w[0] == pytest.approx(RATED_W)


@pytest.mark.parametrize("dt", [0.1, 1.0, 5.0])
def test_a_step_of_heat_moves_a_capacity_limited_unit_with_the_loop_time_constant(dt: float) -> None:
    """Lost capacity of 5 K: at 0.4·rating it settles over its setpoint (20 − A + 5 + 0.4·A = 21 °C at A = 6.7 K); a
    step to the full rating moves supply by ΔQ/G with the loop's own τ = M·c_p/G, at every tick size."""
    run = Run(loss_c=5.0)
    run.step(0.4 * RATED_W, 900, dt)
    start = run.supply[0]
    assert start == pytest.approx(20.0 - APPROACH_K + 5.0 + 0.4 * APPROACH_K) and start > 20.5
    g = RATED_W / APPROACH_K
    tau = run.loop.heat_capacity_j_per_k[0] / g
    assert tau == pytest.approx(TAU_S)
    rise = 0.6 * RATED_W / g
    elapsed = 0.0
    for t in (10.0, TAU_S, 2 * TAU_S):
        run.step(RATED_W, t - elapsed, dt)
        elapsed = t
        assert run.supply[0] - start == pytest.approx(rise * (1 - math.exp(-t / tau)), rel=1e-6)


def test_capacity_loss_raises_supply_by_the_loss_at_full_load_and_less_at_part_load() -> None:
    full, part = Run(loss_c=8.0), Run(loss_c=8.0)
    full.step(RATED_W, 900)
    part.step(0.5 * RATED_W, 900)
    assert full.supply[0] == pytest.approx(28.0, abs=1e-6)
    assert part.supply[0] == pytest.approx(28.0 - APPROACH_K / 2, abs=1e-6)
    healthy = Run()
    healthy.step(RATED_W, 900)
    assert healthy.supply[0] == pytest.approx(20.0)


def test_heat_balance_closes_over_a_transient() -> None:
    """Σ(Q_IT − Q_removed)·dt = M·c_p·ΔT: what the loop did not remove warmed its coolant, to the joule."""
    run = Run(loss_c=6.0)
    dt, stored = 2.0, 0.0
    t0 = run.supply[0]
    for k in range(200):
        it = RATED_W * (0.5 + 0.5 * (k % 50 < 25))
        r = run.step(it, dt, dt)
        stored += (it - r.removed_w[0]) * dt
    assert stored == pytest.approx(run.loop.heat_capacity_j_per_k[0] * (run.supply[0] - t0), rel=1e-9)


def test_raising_the_setpoint_warms_the_loop_no_faster_than_its_it_heat() -> None:
    """The controller cannot heat: with the setpoint 10 K up and a small IT load, the supply rises at Q/(M·c_p)."""
    run = Run(setpoint_c=30.0)
    r = run.step(0.1 * RATED_W, 10)
    rate = 0.1 * RATED_W / run.loop.heat_capacity_j_per_k[0]
    assert run.supply[0] == pytest.approx(20.0 + 10 * rate)
    assert r.removed_w[0] == pytest.approx(0.0, abs=1e-9)


def test_a_warmer_supply_makes_a_better_chiller_and_a_lower_pue() -> None:
    assert cop(COP_REF_C + 4.0) == pytest.approx(COP_REF * (1 + 4 * COP_PER_K))
    cold, warm = Run(supply_c=18.0, setpoint_c=18.0), Run(supply_c=27.0, setpoint_c=27.0)
    rc, rw = cold.step(RATED_W, 60), warm.step(RATED_W, 60)
    assert rw.chiller_w[0] < rc.chiller_w[0] and rw.pue < rc.pue
    assert rc.facility_kw == pytest.approx((RATED_W / COP_REF + rc.pumps_w[0] + rc.fans_w[0]) / 1000)
    assert rc.pue == pytest.approx((RATED_W + 1000 * rc.facility_kw) / RATED_W)


def test_the_facility_sensor_lags_the_supply() -> None:
    run = Run()
    run.setpoint[:] = 24.0
    run.step(RATED_W, 1.0)
    assert run.s_sup[0] < run.supply[0] < 24.0


def test_the_plant_feeds_each_unit_the_heat_of_its_gpus() -> None:
    """Two units, one losing 10 K of capacity: it settles near 10 K over its setpoint (its GPUs at full power),
    the other holds; each unit's IT heat is the power of the GPUs it cools."""
    p = FleetPhysics(Topology.build(4, 2, n_units=2), supply_c=22.0)
    p.capacity_loss_c[0] = 10.0
    for _ in range(600):
        p.step(1.0)
    r = p.loop.reading
    assert r.it_w == pytest.approx([p.power_w[p.node_unit[p.gpu_node] == u].sum() for u in (0, 1)])
    assert p.supply_c[1] == pytest.approx(22.0)
    full = p.loop.rated_w[0]
    assert p.supply_c[0] == pytest.approx(22.0 + 10.0 - APPROACH_K * (1 - r.it_w[0] / full), abs=1e-3)
    assert 1.0 < r.pue < 1.5
    p2 = FleetPhysics(Topology.build(4, 2, n_units=2), supply_c=22.0)
    p2.load_state(p.state_dict())
    assert p2.supply_sensed_c == pytest.approx(p.supply_sensed_c)
    assert p2.return_sensed_c == pytest.approx(p.return_sensed_c)
