"""Leads on changes, with significance: an unrelated drift leads nothing, a supply that drives its GPUs does.

Traces come from the simulator and from numpy with seeds no other test uses and none the constants were
chosen on (those were 17051–17055, see :mod:`actors.twin.history`): 17061–17064 for the simulator, 17065 and
up for synthetic series.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.twin.correlation import differenced_lead, lag1_autocorrelation, lagged_correlation, one_sided_p
from actors.twin.history import ALPHA, MAX_LAG, MIN_READINGS, SMOOTH, supply_lead
from actors.twin.model import LEAD_KINDS, TwinModel
from actors.twin.physics import Topology
from cluster.telemetry.sim import Fault, Simulator

UNRELATED = ["supply_drift@30:cu01=2", "cooling_degradation@43:n01=0.5"]  # the GPUs of n01 heat 13 s later
#: A unit losing 12 °C of capacity and regaining 8, every 40 s (a chiller that trips and restarts).
CYCLING = [f"supply_drift@{t}:cu01={12 if k % 2 == 0 else -8}" for k, t in enumerate(range(20, 300, 40))]


def simulate(faults: list[str], seed: int, seconds: int) -> tuple[TwinModel, list]:
    sim = Simulator(Topology.build(2, 4), [Fault.parse(f) for f in faults], seed=seed)
    twin = TwinModel()
    return twin, [e for _ in range(seconds) for e in twin.ingest(sim.step())]


def level_lead(twin: TwinModel, gpu: str) -> float:
    """r of the old measure (levels, best positive lag) on the twin's own history of ``gpu`` and cu01."""
    i = twin.index[gpu]
    t_g, v_g = twin.gpu_hist.series(i)
    t_u, v_u = twin.cooling.hist.series("cu01")
    inside = (t_g >= t_u[0]) & (t_g <= t_u[-1])
    lead_c = np.interp(t_g[inside], t_u, v_u)
    found = lagged_correlation(lead_c, v_g[inside], min(MAX_LAG, len(lead_c) // 2), 1.0, MIN_READINGS)
    assert found is not None
    return found.r if found.lag >= 1 else 0.0


@pytest.mark.parametrize("seed", [17061, 17062])
def test_an_unrelated_supply_drift_leads_nothing(seed: int) -> None:
    """+2 °C on the supply at 30 s, the coolant flow to n01 halved at 43 s: n01's GPUs heat for their own
    reason. On levels both rise, so the old measure said the supply led them with r ≥ 0.9."""
    twin, events = simulate(UNRELATED, seed, 120)
    hot = [e for e in events if e.kind in LEAD_KINDS]
    assert {e.subject for e in hot} == {f"n01/gpu{g}" for g in range(4)}
    assert not any("lead" in e.data for e in events)
    assert min(level_lead(twin, e.subject) for e in hot) >= 0.9  # what the levels would have claimed
    for e in hot:  # and the changes: not significant, or a gain the supply cannot give
        i = twin.index[e.subject]
        assert supply_lead(twin.gpu_hist, twin.cooling.hist, i, "cu01") is None


@pytest.mark.parametrize("seed", [17063, 17064])
def test_a_supply_that_drives_its_gpus_leads_them_significantly(seed: int) -> None:
    _, events = simulate(CYCLING, seed, 260)
    hot = [e for e in events if e.kind in LEAD_KINDS]
    assert len({e.subject for e in hot}) == 8
    leads = [e.data["lead"] for e in hot if "lead" in e.data]
    assert len(leads) >= 0.75 * len(hot), f"{len(leads)} of {len(hot)} thermal events carry a lead"
    for lead in leads:
        assert isinstance(lead, dict) and lead["series"] == "cu01.supply_c"
        assert isinstance(lead["p"], float) and 0.0 <= lead["p"] <= ALPHA  # events keep 3 decimals
        assert isinstance(lead["lag_s"], float) and 10 <= lead["lag_s"] <= 45  # die and sensor lags
        assert isinstance(lead["n_eff"], float) and 3 < lead["n_eff"] <= lead["n"]
        assert isinstance(lead["r"], float) and 0 < lead["r"] <= 1


# --- the statistics on synthetic series ---------------------------------------------------------------------
def wander(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """A level that drifts: the running sum of AR(1) changes (autocorrelation ``rho``)."""
    d = np.empty(n)
    acc = 0.0
    for k, e in enumerate(rng.normal(size=n)):
        acc = rho * acc + e
        d[k] = acc
    return np.cumsum(d)


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_independent_drifting_series_are_rarely_significant(rho: float) -> None:
    """400 pairs of independent wandering levels: on levels most pairs correlate strongly; the p of their
    changes (autocorrelated as ``rho``, smoothed as the twin does) stays under α as often as it should."""
    rng = np.random.default_rng(17065 + int(10 * rho))
    strong_levels = significant = 0
    for _ in range(400):
        x, y = wander(rng, 120, rho), wander(rng, 120, rho)
        lv = lagged_correlation(x, y, 60, 1.0, 30)
        strong_levels += lv is not None and abs(lv.r) >= 0.5
        found = differenced_lead(x, y, 60, 1.0, 30, SMOOTH)
        significant += found is not None and found.p < 0.01
    assert strong_levels >= 100  # the spurious correlation of levels
    assert significant <= 8  # ≤ 1 % expected (Bonferroni is conservative); 8 of 400 allows for chance


def test_a_driven_follower_gives_its_lag_a_small_p_and_unit_gain() -> None:
    rng = np.random.default_rng(17070)
    x = 25.0 + 0.3 * wander(rng, 160, 0.8)
    y = np.concatenate([np.full(12, x[0]), x[:-12]]) + rng.normal(0.0, 0.05, 160)  # follows 12 samples later
    found = differenced_lead(x, y, 60, 2.0, 30, SMOOTH)
    assert found is not None and found.lag == 12 and found.lag_s == 24.0
    assert found.p < ALPHA / 100 and found.r > 0.9 and found.gain == pytest.approx(1.0, abs=0.1)
    assert 3 < found.n_eff <= found.n
    # The same follower scaled ×5 (it moved five times as much as the supply could move it): same r, gain 5.
    scaled = differenced_lead(x, 5 * y, 60, 2.0, 30, SMOOTH)
    assert scaled is not None and scaled.gain == pytest.approx(5 * found.gain, rel=1e-9)


def test_helpers_and_bad_input() -> None:
    assert one_sided_p(0.0, 50) == pytest.approx(0.5)
    assert one_sided_p(0.9, 3) == 1.0 and one_sided_p(float("nan"), 50) == 1.0
    assert one_sided_p(0.5, 40) < one_sided_p(0.5, 20) < one_sided_p(0.3, 20)
    assert lag1_autocorrelation(np.full(10, 3.0)) == 0.0
    assert lag1_autocorrelation(np.arange(100.0)) > 0.9
    y = np.random.default_rng(17071).normal(size=100)
    assert differenced_lead(y, y, 20, smooth=0) is None
    assert differenced_lead(y, y[:50], 20) is None  # different lengths
    assert differenced_lead(y[:5], y[:5], 3, smooth=7) is None  # shorter than the smoothing
    assert differenced_lead(np.linspace(0, 1, 100), y, 20) is None  # a steady ramp does not change its change
