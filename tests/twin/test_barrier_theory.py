"""Barrier theory: the expected round, wait and efficiency of N workers waiting for the slowest; pure, no Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from actors.twin.barrier_theory import WorkDist, expected_max_of_n, max_of_n_moments, rounds_for_precision, theory


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


def exp(ms: float) -> WorkDist:
    return WorkDist(kind="exp", ms=ms)


def const(ms: float) -> WorkDist:
    return WorkDist(kind="const", ms=ms)


def lognormal(ms: float, sigma: float) -> WorkDist:
    return WorkDist(kind="lognormal", ms=ms, sigma=sigma)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_exponential_matches_harmonic_closed_form(n: int) -> None:
    mean, sd = max_of_n_moments(exp(20), n)
    assert mean == pytest.approx(20.0 * harmonic(n), rel=1e-9)
    assert sd == pytest.approx(20.0 * math.sqrt(sum(1 / i**2 for i in range(1, n + 1))), rel=1e-7)
    assert expected_max_of_n(exp(20), n) == pytest.approx(mean)


def test_anchor_figures_from_the_design() -> None:
    assert expected_max_of_n(exp(1), 8) == pytest.approx(2.72, abs=0.005)
    assert expected_max_of_n(exp(1), 16) == pytest.approx(3.38, abs=0.005)


def test_const_and_const_with_straggler() -> None:
    assert expected_max_of_n(const(20), 8) == 20.0
    assert expected_max_of_n(const(20), 8, straggler=3.0) == 60.0
    t = theory(const(20), 8, straggler=3.0)
    assert t.mean_work_ms == pytest.approx(25.0) and t.wait_ms == pytest.approx(35.0)
    assert t.round_sd_ms == 0.0 and rounds_for_precision(const(20), 8) == 50


@pytest.mark.parametrize(
    ("dist", "n", "straggler"),
    [(exp(20), 8, 3.0), (lognormal(20, 0.5), 8, 1.0), (lognormal(20, 1.0), 16, 1.0), (lognormal(20, 0.7), 4, 2.5)],
    ids=lambda v: v.spec if isinstance(v, WorkDist) else str(v),
)
def test_numerical_integration_agrees_with_seeded_monte_carlo(dist: WorkDist, n: int, straggler: float) -> None:
    draws = dist.sample(np.random.default_rng(12345), (200_000, n))
    draws[:, 0] *= straggler
    maxima = draws.max(axis=1)
    se = maxima.std() / math.sqrt(len(maxima))
    mean, sd = max_of_n_moments(dist, n, straggler)
    assert abs(maxima.mean() - mean) < 5 * se
    assert sd == pytest.approx(maxima.std(), rel=0.03)


def test_lognormal_ms_is_the_mean() -> None:
    assert expected_max_of_n(lognormal(20, 0.8), 1) == pytest.approx(20.0, rel=1e-7)
    t = theory(lognormal(20, 0.5), 8)
    assert t.wait_ms == pytest.approx(t.round_ms - 20.0)
    assert 0 < t.efficiency < 1


def test_theory_wait_is_max_minus_mean_and_rounds_hit_target() -> None:
    t = theory(exp(20), 16)
    assert t.round_ms == pytest.approx(20.0 * harmonic(16))
    assert t.wait_ms == pytest.approx(20.0 * (harmonic(16) - 1))
    assert t.efficiency == pytest.approx(1 / harmonic(16))
    assert [rounds_for_precision(exp(20), n) for n in (4, 8, 16)] == [365, 230, 155]


def test_bad_n_and_straggler_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        expected_max_of_n(exp(20), 0)
    with pytest.raises(ValueError, match="straggler factor must be > 0"):
        theory(exp(20), 4, straggler=0.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "lognormal", "ms": 20}, "sigma is required for lognormal"),
        ({"kind": "exp", "ms": 20, "sigma": 0.5}, "only for lognormal"),
        ({"kind": "exp", "ms": 0}, "needs a mean ms > 0"),
        ({"kind": "exp", "ms": -1}, "greater than or equal to 0"),
        ({"kind": "exp", "ms": math.inf}, "finite number"),
        ({"kind": "lognormal", "ms": 20, "sigma": 0}, "greater than 0"),
        ({"kind": "gamma", "ms": 20}, "'const', 'exp' or 'lognormal'"),
    ],
)
def test_a_work_distribution_that_cannot_be_integrated_is_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkDist(**fields)


def test_spec_names_the_distribution_and_const_zero_is_no_work() -> None:
    assert lognormal(20, 0.5).spec == "lognormal:20:0.5" and exp(20).spec == "exp:20"
    assert theory(const(0), 4).round_ms == 0.0 and theory(const(0), 4).efficiency == 1.0
