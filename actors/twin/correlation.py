"""Lagged cross-correlation: does one series lead another, by how much, and is it more than chance?

The seed's "fast and accurate data correlation": a cooling unit's supply temperature leading the
temperatures of the GPUs it cools. Pure numpy over two equally sampled series; every lag is scored in one
vectorised pass (running sums for the windows' moments, one ``np.correlate`` for their cross products), so
the cost is a few passes over the samples whatever the number of lags.

Two series that both drift correlate on their levels whatever their cause (an unrelated +2 °C supply
drift "led" a GPU heating for its own reason with r = 0.97), so :func:`differenced_lead` correlates their
changes instead and states how likely so good a lag is by chance: Fisher's z over the effective sample
size of two autocorrelated series (Bartlett: ``n_eff = n·(1 − ρ1·ρ2)/(1 + ρ1·ρ2)`` with ρ1, ρ2 their
lag-1 autocorrelations, capped at ``n``), one-sided (a leader moves its follower the same way), times the
number of lags tried (Bonferroni). It also returns the gain, the follower's change per unit of the
leader's, which a caller can hold to what physics allows.
"""

from __future__ import annotations

import math
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
    tried: int = 1  # lags scored


@dataclass(frozen=True)
class Lead:
    """The best lag of two series' changes, with its significance and gain."""

    lag: int  # samples
    lag_s: float  # seconds
    r: float  # Pearson r of the (smoothed) changes at this lag
    n: int  # changes in the overlap
    n_eff: float  # effective sample size of the overlap (Bartlett)
    p: float  # one-sided p of r at n_eff, times the lags tried (Bonferroni), at most 1
    gain: float  # follower change per unit leader change at this lag (least squares)


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
    return Lag(lag=best, lag_s=best * period_s, r=float(r[best]), n=int(n[best]), tried=len(lags))


def differenced_lead(
    leader: np.ndarray, follower: np.ndarray, max_lag: int, period_s: float = 1.0, min_overlap: int = 10,
    smooth: int = 1,
) -> Lead | None:
    """The best lag of the two series' first differences, how significant it is, and the gain at it.

    Args:
        leader, follower, max_lag, period_s, min_overlap: As for :func:`lagged_correlation` (``min_overlap``
            counts changes).
        smooth: Width of a moving average over the changes (the same for both series, so no lag is
            favoured): a noisy sensor's reading-to-reading changes are mostly noise, a trend of a few
            readings is not. Its autocorrelation is in ρ1, ρ2, so ``n_eff`` pays for it.

    Returns:
        The best lag with ``n_eff``, ``p`` and ``gain``; None when either series changes steadily (a constant,
        a straight ramp), :func:`lagged_correlation` of the changes finds nothing, or ``smooth`` is not a
        positive int.
    """
    if not isinstance(smooth, int) or smooth < 1:
        return None
    x, y = np.asarray(leader, dtype=float), np.asarray(follower, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < smooth + 2:
        return None
    box = np.full(smooth, 1.0 / smooth)
    dx, dy = np.convolve(np.diff(x), box, "valid"), np.convolve(np.diff(y), box, "valid")
    if any(np.ptp(d) <= 1e-9 * float(np.abs(d).max(initial=0.0)) for d in (dx, dy)):
        return None  # steady changes (a constant or a straight ramp): their spread is rounding
    found = lagged_correlation(dx, dy, max_lag, period_s, min_overlap)
    if found is None:
        return None
    rho = lag1_autocorrelation(dx) * lag1_autocorrelation(dy)
    n_eff = min(float(found.n), found.n * (1.0 - rho) / (1.0 + rho))
    xs, ys = dx[: found.n], dy[found.lag: found.lag + found.n]
    xs = xs - xs.mean()
    gain = float(xs @ (ys - ys.mean()) / (xs @ xs))
    p = min(1.0, one_sided_p(found.r, n_eff) * found.tried)
    return Lead(found.lag, found.lag_s, found.r, found.n, n_eff, p, gain)


def lag1_autocorrelation(v: np.ndarray) -> float:
    """Lag-1 autocorrelation of ``v`` (0 for a constant series)."""
    c = np.asarray(v, dtype=float) - float(np.mean(v))
    ss = float(c @ c)
    return float(np.clip(c[1:] @ c[:-1] / ss, -1.0, 1.0)) if ss > 0 else 0.0


def one_sided_p(r: float, n_eff: float) -> float:
    """P(r or more | no correlation) by Fisher's z with ``n_eff`` samples; 1 when ``n_eff <= 3``."""
    if n_eff <= 3 or not math.isfinite(r):
        return 1.0
    z = math.atanh(min(max(r, -1.0 + 1e-12), 1.0 - 1e-12)) * math.sqrt(n_eff - 3.0)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _running(v: np.ndarray) -> np.ndarray:
    """Running sums with a leading zero: ``out[k]`` is the sum of the first ``k`` values."""
    out = np.empty(len(v) + 1)
    out[0] = 0.0
    np.cumsum(v, out=out[1:])
    return out
