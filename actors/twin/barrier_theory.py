"""What a barrier should cost, in theory: the expected round time of N workers that wait for the slowest.

The whole fleet waits for the slowest shard, so the wait cost grows with the number of shards: with i.i.d.
exponential work the round lasts ``E[max of N] = H_N * mean``. :class:`WorkDist` is a per-worker work-time
distribution; :func:`max_of_n_moments` integrates the mean and spread of the max of N draws (one worker may
be a straggler); :func:`theory` turns them into a :class:`BarrierTheory` (round, wait, efficiency) and
:func:`rounds_for_precision` says how many rounds an experiment needs to measure it. Pure (numpy only); the
runtime barrier is :mod:`actors.twin.barrier`, the experiment that checks this on Ray is
``cluster.barrier_experiment`` and the ``--work`` / ``--straggler`` spec strings are parsed in
``cluster.cli.barrier``.
"""

from __future__ import annotations

import math
from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class WorkDist(BaseModel):
    """A per-worker work-time distribution. ``ms`` is always the *mean*, so distributions compare at equal work.

    For ``lognormal`` the mean (not the median) is ``ms``: ``mu = ln(ms) - sigma**2 / 2``, so
    ``lognormal:20:0.5`` does the same average work as ``exp:20`` and only the shape differs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["const", "exp", "lognormal"]
    ms: float = Field(ge=0, allow_inf_nan=False, description="Mean work time in milliseconds.")
    sigma: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                description="Lognormal shape (std dev of ln X); lognormal only.")

    @model_validator(mode="after")
    def _shape_fits_kind(self) -> Self:
        if (self.kind == "lognormal") != (self.sigma is not None):
            raise ValueError("sigma is required for lognormal and only for lognormal")
        if self.kind != "const" and self.ms == 0:
            raise ValueError(f"{self.kind} work needs a mean ms > 0")
        return self

    @property
    def spec(self) -> str:
        """The canonical spec string, e.g. ``exp:20``."""
        parts = [self.kind, f"{self.ms:g}"] + ([f"{self.sigma:g}"] if self.sigma is not None else [])
        return ":".join(parts)

    def survival(self, x: np.ndarray) -> np.ndarray:
        """P(X > x) for x > 0, vectorised."""
        if self.kind == "const":
            return (x < self.ms).astype(float)
        if self.kind == "exp":
            return np.exp(-x / self.ms)
        sigma = float(self.sigma or 0.0)
        mu = math.log(self.ms) - sigma * sigma / 2.0
        z = (np.log(x) - mu) / (sigma * math.sqrt(2.0))
        return 0.5 * np.frompyfunc(math.erfc, 1, 1)(z).astype(float)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Draw work times in milliseconds from a seeded generator."""
        if self.kind == "const":
            return np.full(size, self.ms, dtype=float)
        if self.kind == "exp":
            return rng.exponential(self.ms, size)
        sigma = float(self.sigma or 0.0)
        return rng.lognormal(math.log(self.ms) - sigma * sigma / 2.0, sigma, size)


def max_of_n_moments(dist: WorkDist, n: int, straggler: float = 1.0) -> tuple[float, float]:
    """Mean and standard deviation of the maximum of ``n`` independent work times, in ms.

    One of the ``n`` workers (the straggler) has its work multiplied by ``straggler``. Continuous cases are
    integrated numerically (not sampled): ``E[M] = ∫ P(M > x) dx`` and ``E[M²] = ∫ 2x P(M > x) dx`` with
    ``P(M <= x) = F(x)^(n-1) F(x/k)``, on a logarithmic grid that resolves both the bulk and the tail.

    Raises:
        ValueError: ``n < 1`` or a non-positive straggler factor.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (math.isfinite(straggler) and straggler > 0):
        raise ValueError(f"straggler factor must be > 0, got {straggler}")
    d, k = dist, straggler
    if d.kind == "const" or d.ms == 0:
        return (d.ms * (k if n == 1 else max(1.0, k)), 0.0)
    hi_scale = max(1.0, k)
    if d.kind == "exp":
        upper = hi_scale * d.ms * (math.log(n) + 80.0)
    else:
        sigma = float(d.sigma or 0.0)
        mu = math.log(d.ms) - sigma * sigma / 2.0
        upper = hi_scale * math.exp(mu + sigma * (13.0 + math.sqrt(2.0 * math.log(n))))
    lower = 1e-12 * d.ms * min(1.0, k)
    u = np.linspace(math.log(lower), math.log(upper), 40_001)
    x = np.exp(u)
    q_rest = np.clip(d.survival(x), 0.0, 1.0)
    q_k = np.clip(d.survival(x / k), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_cdf = np.log1p(-q_k) + ((n - 1) * np.log1p(-q_rest) if n > 1 else 0.0)
    tail = -np.expm1(log_cdf)  # P(M > x), accurate when it is tiny
    # Below `lower`, P(M > x) is 1 to within 1e-12, so those pieces integrate to `lower` and `lower**2`.
    mean = float(np.trapezoid(tail * x, u)) + lower
    second = float(np.trapezoid(2.0 * x * tail * x, u)) + lower * lower
    return mean, math.sqrt(max(second - mean * mean, 0.0))


def expected_max_of_n(dist: WorkDist, n: int, straggler: float = 1.0) -> float:
    """Expected round time of an ``n``-worker barrier: ``E[max]`` of the work times, in ms.

    ``const:MS`` gives MS; ``exp:MS`` gives ``H_n * MS`` (2.72× at n=8, 3.38× at n=16);
    ``lognormal:MS:SIGMA`` (MS = mean) is integrated numerically. ``straggler`` multiplies one worker's work.
    """
    return max_of_n_moments(dist, n, straggler)[0]


class BarrierTheory(BaseModel):
    """What one round of an N-worker barrier costs, in theory (no call overhead); N is the caller's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round_ms: float = Field(description="E[max] of the work times.")
    round_sd_ms: float = Field(description="Standard deviation of the round time.")
    mean_work_ms: float = Field(description="Mean work per worker (the straggler included).")
    wait_ms: float = Field(description="Mean per-worker wait: E[max] - mean work.")
    efficiency: float = Field(description="mean work / E[max].")


def theory(dist: WorkDist, n: int, straggler: float = 1.0) -> BarrierTheory:
    """Expected round time, spread, per-worker wait and efficiency of an ``n``-worker barrier."""
    mean, sd = max_of_n_moments(dist, n, straggler)
    work = dist.ms * (n - 1 + straggler) / n
    return BarrierTheory(
        round_ms=mean,
        round_sd_ms=sd,
        mean_work_ms=work,
        wait_ms=mean - work,
        efficiency=work / mean if mean > 0 else 1.0,
    )


def rounds_for_precision(
    dist: WorkDist, n: int, straggler: float = 1.0, rel_se: float = 0.03, lo: int = 50, hi: int = 2000
) -> int:
    """Rounds needed so the standard error of the mean round time is ``rel_se`` of its expectation.

    ``SE = sd / sqrt(R)``, so ``R = (sd / (rel_se * mean))**2``, clamped to ``[lo, hi]``. For ``exp`` the
    coefficient of variation of the max is ``sqrt(sum 1/i²) / H_n``: 0.57 at n=4, 0.45 at n=8, 0.37 at n=16,
    hence 365, 230 and 155 rounds at 3 %, so a 15 % acceptance band is five standard errors wide.
    """
    mean, sd = max_of_n_moments(dist, n, straggler)
    if mean <= 0 or sd == 0:
        return lo
    return int(min(hi, max(lo, math.ceil((sd / (rel_se * mean)) ** 2))))
