"""Lagged correlation: the pure function on synthetic series, the series history, and the lead the twin
measures (a cooling unit's supply temperature leading its GPUs' temperatures) on the simulator (seed 17066,
used by no other test) and on recorded scenarios. Significance: ``test_correlation_significance.py``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from actors.twin.correlation import lagged_correlation
from actors.twin.history import ALPHA, GpuHistory, UnitHistory, supply_lead
from actors.twin.model import LEAD_KINDS, TwinModel
from actors.twin.physics import Topology
from actors.twin.shards import ShardedTwin, partition
from actors.twin.state import load, pack
from cluster.telemetry.quality import Validator
from cluster.telemetry.replay import read_batches
from cluster.telemetry.samples import Sample
from cluster.telemetry.sim import Fault, Simulator

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def smooth_signal(seed: int, n: int) -> np.ndarray:
    """White noise low-passed (a first-order lag, τ ≈ 4 samples): swings with a few samples' memory."""
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    acc = 0.0
    for k, v in enumerate(rng.normal(size=n)):
        acc += (v - acc) * 0.25
        out[k] = acc
    return 25.0 + out


def brute_force(x: np.ndarray, y: np.ndarray, max_lag: int, min_overlap: int) -> np.ndarray:
    return np.array([np.corrcoef(x[: len(x) - lag], y[lag:])[0, 1]
                     for lag in range(max_lag + 1) if len(x) - lag >= min_overlap])


@pytest.mark.parametrize(("lag", "period_s"), [(0, 1.0), (7, 1.0), (7, 2.0), (23, 0.5)])
def test_a_known_lag_is_recovered_with_r_one(lag: int, period_s: float) -> None:
    s = smooth_signal(1, 200)
    leader, follower = s, np.concatenate([np.full(lag, s[0]), s[: 200 - lag]])  # follower[t] = leader[t - lag]
    got = lagged_correlation(leader, follower, max_lag=40, period_s=period_s)
    assert got is not None
    assert got.lag == lag and got.lag_s == pytest.approx(lag * period_s)
    assert got.r == pytest.approx(1.0, abs=1e-9) and got.n == 200 - lag


def test_it_agrees_with_pearson_at_every_lag() -> None:
    rng = np.random.default_rng(5)
    x, y = 60 + rng.normal(size=90), 80 + 3 * rng.normal(size=90)  # offsets far from zero: precision matters
    want = brute_force(x, y, 30, 10)
    got = lagged_correlation(x, y, max_lag=30, min_overlap=10)
    assert got is not None
    assert got.lag == int(np.argmax(want)) and got.r == pytest.approx(float(want.max()), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("noise", "min_r"), [(0.3, 0.9), (0.6, 0.75)])
def test_noise_does_not_move_the_lag(seed: int, noise: float, min_r: float) -> None:
    rng = np.random.default_rng(100 + seed)
    s = smooth_signal(seed, 240)
    leader = s[20:140]
    follower = s[8:128] + rng.normal(scale=noise * s.std(), size=120)  # lags by 12 samples, noisy
    got = lagged_correlation(leader, follower, max_lag=40)
    assert got is not None and abs(got.lag - 12) <= 1 and min_r < got.r < 1.0


def test_constant_short_or_broken_series_measure_nothing() -> None:
    y = smooth_signal(2, 100)
    assert lagged_correlation(np.full(100, 25.0), y, 20) is None  # a constant leader
    assert lagged_correlation(y, np.full(100, 80.0), 20) is None
    assert lagged_correlation(y[:5], y[:5], 3) is None  # shorter than the minimum overlap
    assert lagged_correlation(y, y[:50], 10) is None  # different lengths
    bad = y.copy()
    bad[10] = np.nan
    assert lagged_correlation(bad, y, 10) is None
    # A leader flat in its early part only: lags whose window is flat are skipped, never NaN.
    step = np.concatenate([np.full(60, 25.0), np.linspace(25, 35, 40)])
    got = lagged_correlation(step, np.concatenate([np.full(70, 70.0), np.linspace(70, 79, 30)]), 50)
    assert got is not None and np.isfinite(got.r)


def test_every_lag_keeps_the_minimum_overlap() -> None:
    s = smooth_signal(3, 60)
    got = lagged_correlation(s, s, max_lag=1000, min_overlap=25)
    assert got is not None and got.lag == 0 and got.n == 60
    shifted = lagged_correlation(s[:40], np.concatenate([np.zeros(10), s[:30]]), max_lag=1000, min_overlap=25)
    assert shifted is None or shifted.n >= 25


# --- the series history ------------------------------------------------------------------------------------
def test_gpu_ring_keeps_the_last_readings_and_restarts_on_a_gap() -> None:
    h = GpuHistory(size=5)
    h.grow(2)
    for t in range(1, 9):
        h.push(np.array([0, 1]), np.array([float(t), float(t)]), np.array([10.0 + t, 20.0 + t]))
    ts, ys = h.series(0)
    assert ts.tolist() == [4.0, 5.0, 6.0, 7.0, 8.0] and ys.tolist() == [14.0, 15.0, 16.0, 17.0, 18.0]
    h.push(np.array([1]), np.array([30.0]), np.array([50.0]))  # a 22 s gap in a 1 s series
    ts, ys = h.series(1)
    assert ts.tolist() == [30.0] and ys.tolist() == [50.0]
    h.grow(20)  # growing keeps what is there
    assert h.series(0)[1].tolist() == [14.0, 15.0, 16.0, 17.0, 18.0] and len(h.series(19)[0]) == 0


def test_a_supply_the_gpu_does_not_follow_leads_nothing() -> None:
    rng = np.random.default_rng(9)
    gpus, units = GpuHistory(), UnitHistory()
    gpus.grow(1)
    for t in range(1, 121):
        units.push("cu01", float(t), 25.0 + 0.1 * max(0, t - 20))  # the supply drifts up 10 °C
        gpus.push(np.array([0]), np.array([float(t)]), np.array([75.0 + rng.normal(scale=0.5)]))
    assert supply_lead(gpus, units, 0, "cu01") is None
    assert supply_lead(gpus, units, 0, "cu99") is None  # a unit never heard of


# --- the twin on the simulator and on recorded scenarios ---------------------------------------------------
#: A unit losing 12 °C of capacity and regaining 8, every 40 s: its supply's moves echo in all its GPUs.
CYCLING = [Fault(kind="supply_drift", at_s=t, target="cu01", value=12.0 if k % 2 == 0 else -8.0)
           for k, t in enumerate(range(20, 300, 40))]


@cache
def cycling_batches() -> tuple[tuple[Sample, ...], ...]:
    sim = Simulator(Topology.build(2, 4), list(CYCLING), seed=17066)
    return tuple(tuple(sim.step()) for _ in range(260))


def run(twin: TwinModel | ShardedTwin | None = None, batches: tuple = ()) -> list:
    twin = twin if twin is not None else TwinModel()
    return [e for batch in (batches or cycling_batches()) for e in twin.ingest(list(batch))]


def replay(name: str, twin: TwinModel | ShardedTwin | None = None) -> list:
    twin = twin if twin is not None else TwinModel()
    return [e for batch, _ in read_batches(SCENARIOS / name / "trace.jsonl", Validator()) for e in twin.ingest(batch)]


def test_gpu_events_carry_their_units_measured_lead() -> None:
    events = run()
    thermal = [e for e in events if e.kind in LEAD_KINDS]
    assert thermal
    for e in (e for e in thermal if "lead" in e.data):
        lead = e.data["lead"]
        assert isinstance(lead, dict), e
        assert lead["series"] == "cu01.supply_c"
        assert isinstance(lead["lag_s"], float) and 0 < lead["lag_s"] <= 60
        assert isinstance(lead["p"], float) and lead["p"] <= ALPHA
        assert isinstance(lead["n"], int) and lead["n"] >= 30
    assert {e.subject for e in thermal if "lead" in e.data} == {f"n0{n}/gpu{g}" for n in (1, 2) for g in range(4)}
    assert not any("lead" in e.data for e in events if e.kind not in LEAD_KINDS)


def test_leads_are_deterministic_and_survive_the_sharded_twin_and_a_checkpoint() -> None:
    a = run()
    b = run()
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    assert any("lead" in e.data for e in a)
    sharded = run(ShardedTwin(partition(["n01", "n02"], 2)))
    leads = lambda evs: sorted((e.subject, e.ts, e.kind, str(e.data.get("lead"))) for e in evs if e.kind in LEAD_KINDS)  # noqa: E731
    assert leads(sharded) == leads(a)
    # A checkpointed twin carries its history: resumed in the middle of the episode, it measures the same leads.
    batches = cycling_batches()
    twin = TwinModel()
    first = run(twin, batches[:215])
    twin = load(pack("model", twin.to_state()), "model", "test", TwinModel.from_state)  # the checkpoint's format
    rest = run(twin, batches[215:])
    assert [e.to_json() for e in first + rest] == [e.to_json() for e in a]


def test_the_recorded_cooling_loss_leads_most_of_its_gpus() -> None:
    """The recording's unit trips and restarts every 40 s (tests/scenarios/cooling_loss/expected.yaml): the leads
    the twin attaches are all cu01's, significant, and as late as the die and the sensor make a GPU follow."""
    events = replay("cooling_loss")
    led = [e for e in events if e.kind in LEAD_KINDS and "lead" in e.data]
    assert len({e.subject for e in led}) >= 6  # of 8: each window is tested on its own (7 pass on the recording)
    for e in led:
        lead = e.data["lead"]
        assert lead["series"] == "cu01.supply_c" and 0.0 <= lead["p"] <= ALPHA and 10 <= lead["lag_s"] <= 45, e
    assert not any("lead" in e.data for e in events if e.kind not in LEAD_KINDS)


@pytest.mark.parametrize("name", ["benign_noise", "coolant_flow", "fan_failure"])
def test_no_lead_where_the_supply_did_not_move(name: str) -> None:
    assert not any("lead" in e.data for e in replay(name))
