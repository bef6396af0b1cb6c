"""Lagged cross-correlation: does one series lead another, by how much, and how closely do they move?

The seed's "fast and accurate data correlation": a cooling unit's supply temperature leading the
temperatures of the GPUs it cools. Pure numpy over two equally sampled series; every lag is scored in one
vectorised pass (running sums for the windows' moments, one ``np.correlate`` for their cross products), so
the cost is a few passes over the samples whatever the number of lags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A window whose variance is below this share of the whole series' is taken as constant: its r would be
#: rounding noise divided by rounding noise.
FLAT_SHARE = 1e-9


@dataclass(frozen=True)
class Lag:
    """The best lag found: the leader's value ``lag`` samples earlier best matches the follower's now."""

    lag: int  # samples
    lag_s: float  # seconds (``lag`` times the sample period)
    r: float  # Pearson r over the overlap at this lag
    n: int  # samples in the overlap


def lagged_correlation(
    leader: np.ndarray, follower: np.ndarray, max_lag: int, period_s: float = 1.0, min_overlap: int = 10
) -> Lag | None:
    """Pearson r between ``leader[t - L]`` and ``follower[t]`` for every lag ``L`` in ``0..max_lag``; the best.

    The best lag is the one with the highest (signed) r: a leader that drives the follower moves it the
    same way; ties go to the shortest lag, so the answer is deterministic.

    Args:
        leader: The series expected to move first.
        follower: The series expected to follow, sampled at the same instants as ``leader``.
        max_lag: The longest lag tried, in samples (capped so every overlap keeps ``min_overlap`` samples).
        period_s: The sample period, to state the lag in seconds.
        min_overlap: The fewest paired samples a lag's r may rest on.

    Returns:
        The best lag, or None when nothing is measurable: series of different lengths or too short, a
        non-finite value, or no lag whose windows both vary (a constant series has no correlation).
    """
    x = np.asarray(leader, dtype=float)
    y = np.asarray(follower, dtype=float)
    n_all = len(x)
    if x.ndim != 1 or x.shape != y.shape or n_all < max(min_overlap, 2) or max_lag < 0:
        return None
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    # Centre first: the moments below are differences of running sums, exact only near zero mean.
    x = x - x.mean()
    y = y - y.mean()
    lags = np.arange(min(max_lag, n_all - max(min_overlap, 2)) + 1)
    n = n_all - lags  # overlap at each lag: leader[0:n] against follower[L:L+n]
    cx, cxx = _running(x), _running(x * x)
    cy, cyy = _running(y), _running(y * y)
    sx, sxx = cx[n], cxx[n]
    sy, syy = cy[n_all] - cy[lags], cyy[n_all] - cyy[lags]
    # full[k] = sum_i y[i + k - (N-1)] * x[i], so the product sum at lag L sits at k = N - 1 + L.
    sxy = np.correlate(y, x, mode="full")[n_all - 1 + lags]
    vx = sxx - sx * sx / n
    vy = syy - sy * sy / n
    cov = sxy - sx * sy / n
    ok = (vx > FLAT_SHARE * cxx[n_all]) & (vy > FLAT_SHARE * cyy[n_all])
    if not ok.any():
        return None
    r = np.full(len(lags), -np.inf)
    r[ok] = np.clip(cov[ok] / np.sqrt(vx[ok] * vy[ok]), -1.0, 1.0)
    best = int(np.argmax(r))  # first maximum: the shortest of equally good lags
    return Lag(lag=best, lag_s=best * period_s, r=float(r[best]), n=int(n[best]))


def _running(v: np.ndarray) -> np.ndarray:
    """Running sums with a leading zero: ``out[k]`` is the sum of the first ``k`` values."""
    out = np.empty(len(v) + 1)
    out[0] = 0.0
    np.cumsum(v, out=out[1:])
    return out
