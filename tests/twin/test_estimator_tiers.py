"""The tiered estimator: every GPU screened, the hypothesis bank only for those the screen says may come near the
line (actors/twin/estimator.py, "Tiers"). Asserted through the estimator's public views and slots."""

from __future__ import annotations

import numpy as np

from actors.twin.estimator import EstimatorConfig
from actors.twin.model import TwinModel
from cluster.telemetry.samples import CoolingSample, GpuSample

SUPPLY_C, R, TAU_D, TAU_S, SLOWDOWN_C = 35.0, 0.08, 15.0, 12.0, 89.0
HOLD_S = 120.0


def plant(power: np.ndarray, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """True die and sensor (first-order lags) for a power trace on a ``dt`` grid, starting settled."""
    die = np.empty_like(power)
    sensor = np.empty_like(power)
    T = s = SUPPLY_C + R * power[0]
    for k, p in enumerate(power):
        T += (SUPPLY_C + R * p - T) * (1.0 - np.exp(-dt / TAU_D))
        s += (T - s) * (1.0 - np.exp(-dt / TAU_S))
        die[k], sensor[k] = T, s
    return die, sensor


def test_only_gpus_near_the_line_hold_a_bank_slot_and_a_cooled_one_is_released_after_the_hold() -> None:
    t = np.arange(0.0, 900.0, 0.1)
    powers = {
        "far": np.full_like(t, 200.0),  # settles at 51 °C: 38 °C under the line
        "rising": np.where(t < 300.0, 300.0, 700.0),  # 59 °C, then a step to settle at 91 °C (over the line)
        "cooling": np.where(t < 300.0, 650.0, 150.0),  # 87 °C (2 under), then 47 °C
    }
    truth = {g: plant(p) for g, p in powers.items()}
    rng = np.random.default_rng(5)
    twin = TwinModel(estimator=EstimatorConfig(exit_hold_s=HOLD_S))
    names = {g: f"n{k}/gpu0" for k, g in enumerate(powers)}
    slots: dict[str, list[int]] = {g: [] for g in powers}
    warned: dict[str, float] = {}
    for k in range(10, len(t), 10):  # one reading a second
        ts = float(round(t[k], 1))
        batch: list = []
        if k % 50 == 0:
            batch += [CoolingSample(kind="cooling", ts=ts, unit=f"cu{j}", supply_c=SUPPLY_C, setpoint_c=SUPPLY_C,
                                    serves=(f"n{j}",)) for j in range(len(powers))]
        batch += [GpuSample(kind="gpu", ts=ts, node=f"n{j}", gpu=0, model="H100-SXM", power_w=float(powers[g][k]),
                            temp_c=round(float(truth[g][1][k] + rng.normal(0.0, 0.2)), 2))
                  for j, g in enumerate(powers)]
        for e in twin.ingest(batch):
            if e.kind == "thermal_slowdown_predicted":
                warned.setdefault(next(g for g in powers if names[g] == e.subject), ts)
        for g in powers:
            slots[g].append(int(twin.est.slot[twin.index[names[g]]]))
    seconds = t[10::10]
    far, rising, cooling = (np.array(slots[g]) for g in powers)
    # far below the line: screened only, never a bank slot, never warned; its views come from the screen
    assert (far == -1).all() and "far" not in warned
    i_far = twin.index[names["far"]]
    assert abs(float(twin.est.true_c(np.array([i_far]))[0]) - truth["far"][0][-1]) < 1.5
    assert twin.est.crossing(np.array([i_far]), np.array([SLOWDOWN_C]))[0][0] == 0.0
    # heading to the line: screened until the step, a slot from the step on, warned before its die crosses
    assert (rising[seconds < 299] == -1).all() and (rising[(seconds >= 302) & (seconds < 600)] >= 0).all()
    cross_ts = float(t[np.argmax(truth["rising"][0] >= SLOWDOWN_C)])
    assert 300.0 <= warned["rising"] < cross_ts, (warned, cross_ts)
    # cooled: watched while near the line, released once clear for the hold, and not before
    assert (cooling[(seconds > 20) & (seconds < 300)] >= 0).all()
    released = float(seconds[np.argmax((cooling == -1) & (seconds > 300))])
    # (clear: the die, which the screen follows ahead of the lagging sensor, and its steady state under the margin)
    clear = float(t[np.argmax((t > 300) & (truth["cooling"][0] < SLOWDOWN_C - twin.est.cfg.exit_margin_c))])
    assert clear + HOLD_S - 5.0 <= released <= clear + HOLD_S + 30.0, (clear, released)
    assert twin.est.k == int((twin.est.slot >= 0).sum()) == 1  # the rising GPU only, now over the line
    # a checkpoint keeps the slots
    again = TwinModel.from_state(twin.to_state())
    assert np.array_equal(again.est.slot, twin.est.slot) and np.array_equal(again.est.xs[: again.est.k],
                                                                            twin.est.xs[: twin.est.k])
