"""The fleet-outcome bench's core (bench/fleet_outcome.py) on a small fleet and a short horizon.

Structural properties only (the published figures come from the bench's own run): every responder meets the
same faults, losses are never negative, interruptions cost every responder alike, and on a slow cooling fault
— one that gives the twin warning time — acting on the warning loses no more than waiting for it, and waiting
for a human loses no more than waiting for the hardware slowdown. Seeds 17801–17804 are used by no other test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.fleet_outcome import INTERRUPTIONS_PER_GPU_DAY, Fault, Scenario, draw_faults, run, table

SMALL = Scenario(gpus=64, days=0.25, seed=17801, nodes_per_unit=4, nodes_per_job=4)  # 8 nodes, 2 units, 2 jobs
SLOW_COOLING = [
    # unit cu01 loses 22 °C of capacity over 15 min from t = 30 min: the twin sees its supply drift (3 °C over
    # setpoint after ~3 min, through the coolant loop's heat balance) well before any die reaches slowdown (~13 min
    # in); repaired 4 h later
    Fault("capacity_loss", 1800.0, 0, 22.0, ramp_s=900.0, repair_s=4 * 3600.0),
    Fault("interruption", 3600.0, 40, 600.0, cause="faulty GPU"),  # job02 loses 10 min of work and restarts
]


@pytest.fixture(scope="module")
def outcomes() -> dict:
    return {o.name: o for o in run(SMALL, SLOW_COOLING)}


def test_every_responder_meets_the_same_faults(outcomes: dict) -> None:
    assert list(outcomes) == ["threshold", "opsloop+human", "opsloop auto"]
    assert all(o.faults == SLOW_COOLING for o in outcomes.values())
    week = Scenario(seed=17802)  # the bench's own fleet: a week's draw has faults of every kind
    drawn = draw_faults(week)
    assert drawn == draw_faults(week) != draw_faults(Scenario(seed=17803))
    assert {f.kind for f in drawn} >= {"interruption", "capacity_loss", "flow_loss"}
    # Drawn by run() itself (no faults given): still one list for all three.
    brief = Scenario(gpus=64, days=0.02, seed=17802, nodes_per_unit=4, nodes_per_job=4, thermal_scale=3000.0)
    met = [o.faults for o in run(brief)]
    assert met[0] and met[0] == met[1] == met[2] == draw_faults(brief)


def test_losses_are_never_negative_and_interruptions_cost_everyone_alike(outcomes: dict) -> None:
    for o in outcomes.values():
        assert min(o.slow_gpu_h, o.failure_gpu_h, o.requeue_gpu_h, o.hw_slowdown_gpu_h, o.barrier_gpu_h) >= 0
        assert 0 < o.goodput <= o.ettr <= 1 and o.energy_mwh > 0
        # 32 GPUs × (10 min of lost work + a 10 min restart)
        assert o.failure_gpu_h == pytest.approx(32 * (600 + SMALL.restart_s) / 3600)


def test_acting_on_the_warning_beats_waiting_for_a_human_beats_waiting_for_the_slowdown(outcomes: dict) -> None:
    auto, human, thr = outcomes["opsloop auto"], outcomes["opsloop+human"], outcomes["threshold"]
    assert auto.slow_gpu_h <= human.slow_gpu_h <= thr.slow_gpu_h
    assert auto.hw_slowdown_gpu_h == 0 < human.hw_slowdown_gpu_h < thr.hw_slowdown_gpu_h
    assert thr.hw_slowdown_gpu_h > 0 and thr.slow_gpu_h > auto.slow_gpu_h  # the fault does hurt when left alone
    assert auto.goodput >= human.goodput >= thr.goodput
    assert auto.actions and thr.actions  # both acted; the threshold tools only after the GPUs throttled
    assert "| opsloop auto |" in table(list(outcomes.values()))


def test_the_interruption_rate_is_llama_3s() -> None:
    """Drawn over Llama 3's own fleet and span, the count is 419 up to Poisson noise (4 σ ≈ 82)."""
    sc = Scenario(gpus=16_384, days=54, seed=17804, thermal_scale=0.0)
    faults = draw_faults(sc)
    assert all(f.kind == "interruption" for f in faults)
    assert abs(len(faults) - 419) < 4 * 419**0.5
    assert INTERRUPTIONS_PER_GPU_DAY * 1000 == pytest.approx(0.4736, abs=1e-4)


def test_bad_fleet_sizes_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        Scenario(gpus=100)
    bench = Path(__file__).parents[2] / "bench" / "fleet_outcome.py"
    done = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, check=False,
                          cwd=bench.parents[1], env={"PYTHONPATH": str(bench.parents[1])})
    assert done.returncode == 0 and "--gpus" in done.stdout and "--seed" in done.stdout and "--days" in done.stdout
