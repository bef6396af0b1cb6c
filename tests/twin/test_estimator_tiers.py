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


T_GRID = np.arange(0.0, 900.0, 0.1)
POWERS = {
    "far": np.full_like(T_GRID, 200.0),  # settles at 51 °C: 38 °C under the line
    "rising": np.where(T_GRID < 300.0, 300.0, 700.0),  # 59 °C, then a step to settle at 91 °C (over the line)
    "cooling": np.where(T_GRID < 300.0, 650.0, 150.0),  # 87 °C (2 under), then 47 °C
}
TRUTH = {g: plant(p) for g, p in POWERS.items()}
NAMES = {g: f"n{k}/gpu0" for k, g in enumerate(POWERS)}


def feed(twin: TwinModel, one_by_one: bool = False) -> tuple[dict[str, list[int]], dict[str, float], list]:
    """A reading a second of every GPU (in one round, or ``one_by_one`` in rounds of one GPU) and its unit's supply
    every 5 s; each GPU's bank slot after every second, when each was first warned, and every event."""
    rng = np.random.default_rng(5)
    slots: dict[str, list[int]] = {g: [] for g in POWERS}
    warned: dict[str, float] = {}
    events: list = []
    for k in range(10, len(T_GRID), 10):
        ts = float(round(T_GRID[k], 1))
        cooling = [CoolingSample(kind="cooling", ts=ts, unit=f"cu{j}", supply_c=SUPPLY_C, setpoint_c=SUPPLY_C,
                                 serves=(f"n{j}",)) for j in range(len(POWERS))] if k % 50 == 0 else []
        gpus = [GpuSample(kind="gpu", ts=ts, node=f"n{j}", gpu=0, model="H100-SXM", power_w=float(POWERS[g][k]),
                          temp_c=round(float(TRUTH[g][1][k] + rng.normal(0.0, 0.2)), 2))
                for j, g in enumerate(POWERS)]
        batches = [cooling, *[[s] for s in gpus]] if one_by_one else [cooling + gpus]
        new = [e for batch in batches for e in twin.ingest(batch)]
        events += new
        for e in new:
            if e.kind == "thermal_slowdown_predicted":
                warned.setdefault(next(g for g in POWERS if NAMES[g] == e.subject), e.ts)
        for g in POWERS:
            slots[g].append(int(twin.est.slot[twin.index[NAMES[g]]]))
    return slots, warned, events


def test_only_gpus_near_the_line_hold_a_bank_slot_and_a_cooled_one_is_released_after_the_hold() -> None:
    t, truth, names = T_GRID, TRUTH, NAMES
    twin = TwinModel(estimator=EstimatorConfig(exit_hold_s=HOLD_S))
    slots, warned, _ = feed(twin)
    seconds = t[10::10]
    far, rising, cooling = (np.array(slots[g]) for g in POWERS)
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


def test_rounds_of_one_gpu_and_rounds_of_every_gpu_give_the_same_estimates() -> None:
    """A round of every GPU in order works on whole arrays and slot slices; a round of some GPUs goes through their
    indices. The same readings either way: the same slots, warnings and estimates."""
    cfg = EstimatorConfig(exit_hold_s=HOLD_S)
    a, b = TwinModel(estimator=cfg), TwinModel(estimator=cfg)
    slots_a, warned_a, events_a = feed(a)
    slots_b, warned_b, events_b = feed(b, one_by_one=True)
    assert slots_a == slots_b and warned_a == warned_b and "rising" in warned_a
    assert [e.to_json() for e in events_a] == [e.to_json() for e in events_b]
    for name in ("x", "proj", "sc", "b_hat", "r_hat", "slot"):
        assert np.array_equal(getattr(a.est, name), getattr(b.est, name)), name
    assert np.array_equal(a.est.xs[: a.est.k], b.est.xs[: b.est.k]) and a.est.k == 1


def test_a_gpus_inlet_is_its_units_latest_supply_and_follows_its_node_to_another_unit() -> None:
    """The fold reads each GPU's cooling from per-node arrays set as cooling samples arrive (no lookup per GPU)."""
    twin = TwinModel()

    def tick(ts: float, *units: tuple[str, float, tuple[str, ...]], **extra: object) -> None:
        twin.ingest([*(CoolingSample(kind="cooling", ts=ts, unit=u, supply_c=c, setpoint_c=c, serves=nodes, **extra)
                       for u, c, nodes in units),
                     *(GpuSample(kind="gpu", ts=ts, node=n, gpu=0, model="H100-SXM", power_w=300.0, temp_c=50.0)
                       for n in ("n1", "n2", "n3"))])

    tick(1.0, ("cua", 20.0, ("n1", "n2")))
    assert twin.est.inlet.tolist() == [20.0, 20.0, EstimatorConfig().inlet_prior_c]  # n3: no unit known
    tick(2.0, ("cub", 30.0, ("n2",)), ("cua", 21.0, ("n1", "n2")))  # n2 back to cua in the same batch
    assert twin.est.inlet.tolist()[:2] == [21.0, 21.0]
    tick(3.0, ("cub", 31.0, ("n2", "n3")))  # n2 and n3 move to cub
    tick(4.0, ("cua", 22.0, ("n1",)), flow_frac={"n1": 0.5}, fan_pct=60.0)  # cua's readings no longer reach n2
    assert twin.est.inlet.tolist() == [22.0, 31.0, 31.0]
    assert twin.node_cool[:, twin.node_ix["n1"]].tolist() == [22.0, 0.5, 60.0]
    again = TwinModel.from_state(twin.to_state())  # the per-node arrays are rebuilt from the checkpoint
    assert np.array_equal(again.node_cool, twin.node_cool, equal_nan=True)
