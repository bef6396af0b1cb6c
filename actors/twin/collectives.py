"""What a data-parallel job's step costs: a ring all-reduce, the part of it compute hides, and the barrier.

Pure numpy, vectorised over jobs (or over GPUs with a job index), no state. :class:`FleetPhysics` prices its
jobs' steps with it (``FleetPhysics.job_step_ms``) and ``bench/fleet_outcome.py`` prices the jitter wait.

**Ring all-reduce** of ``S`` bytes over ``N`` ranks: every rank sends and receives ``2(N−1)/N·S`` bytes
(a reduce-scatter then an all-gather, ``N−1`` steps each) and pays a per-step latency ``α`` ``2(N−1)`` times:
``t = 2(N−1)/N · S/B + 2(N−1)·α`` (Patarasuk & Yuan, *Bandwidth optimal all-reduce algorithms*, 2009;
the NCCL performance notes' "bus bandwidth" uses the same ``2(N−1)/N`` factor). ``B`` is the *per-direction*
bandwidth of the ring's slowest link, times the fraction of it that link achieves now:

- NVLink 4 (H100 SXM): 18 links × 25 GB/s = 450 GB/s per direction (NVIDIA quotes 900 GB/s, both ways);
- PCIe 5.0 x16: 32 GT/s × 16 lanes × 128/130 ≈ 63 GB/s per direction, taken as 64 GB/s;
- NDR InfiniBand: 400 Gb/s = 50 GB/s per direction.

``α`` (per ring step) is an assumption of a few microseconds (NCCL's latency per hop on NVLink and on IB), not
a measured figure; at the message sizes of gradient buckets the bandwidth term dominates.

**Overlap.** A fraction ``overlap`` of the communication runs behind the backward pass, but no more than the
backward pass lasts: ``hidden = min(overlap·t, backward)``, ``exposed = t − hidden``. So a slow link first
eats the slack and then adds to the step one for one.

**The barrier.** Every rank waits for the slowest before the all-reduce. Each GPU's compute time is
lognormal, ``log X_i ~ N(μ_i, σ²)``; the job's compute is ``E[max_i X_i]``. For ``N`` identical GPUs the log
of the max sits near Blom's quantile, ``μ + σ·Φ⁻¹((N − 0.375)/(N + 0.25))``; its exponential is within 3 % of
a Monte-Carlo of ``E[max]`` for σ ≤ 0.3 and any ``N`` (``tests/twin/test_collectives.py``). For GPUs that
differ (one throttled), each GPU ``d_i = (μ* − μ_i)/σ`` spreads below the slowest ``μ*`` counts as
``exp(−z·d_i − d_i²/2)`` of a GPU at ``μ*`` — the ratio of their normal tail probabilities at the level ``z``
where the max lives — and the max is Blom's quantile of that effective count, ``z`` being that same quantile
(a fixed point). Against a Monte-Carlo it is within 2 % for one to sixteen GPUs slowed 2–50 % among 2–1,024.
σ → 0 gives back the plain deterministic max. The **jitter wait** is what the barrier costs:
``Σ_i (E[max] − x_i)`` GPU-seconds a step, ``x_i = exp(μ_i)`` being GPU ``i``'s own time by the same rule.
"""

from __future__ import annotations

import math

import numpy as np

#: Per-direction bandwidth of one link, bytes per second (see the module docstring for the sources).
LINK_BYTES_PER_S = {"nvlink": 450e9, "pcie": 64e9, "ib": 50e9}
#: Latency per ring step, seconds: an assumption of the order NCCL shows per hop, not a measurement.
LINK_ALPHA_S = {"nvlink": 2e-6, "pcie": 3e-6, "ib": 5e-6}

# Acklam's rational approximation of the inverse normal CDF (absolute error < 5e-5 without his refinement
# step; plenty for a quantile that multiplies a spread of a few per cent), central and tail parts.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549671625902700e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def norm_ppf(p: np.ndarray | float) -> np.ndarray:
    """Φ⁻¹(p) for p in (0, 1), vectorised (numpy has no inverse normal CDF and scipy is not a dependency here)."""
    p = np.asarray(p, float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("norm_ppf needs probabilities strictly between 0 and 1")
    q = np.where(p < 0.5, p, 1.0 - p)  # the lower half; the upper is its mirror
    tail = q < _P_LOW
    r = np.sqrt(-2.0 * np.log(np.where(tail, q, _P_LOW)))
    x_tail = (((((_C[0] * r + _C[1]) * r + _C[2]) * r + _C[3]) * r + _C[4]) * r + _C[5]) / (
        (((_D[0] * r + _D[1]) * r + _D[2]) * r + _D[3]) * r + 1.0)
    u = q - 0.5
    s = u * u
    x_mid = (((((_A[0] * s + _A[1]) * s + _A[2]) * s + _A[3]) * s + _A[4]) * s + _A[5]) * u / (
        ((((_B[0] * s + _B[1]) * s + _B[2]) * s + _B[3]) * s + _B[4]) * s + 1.0)
    x = np.where(tail, x_tail, x_mid)  # both negative: the quantile of q ≤ 0.5
    return np.where(p < 0.5, x, -x)


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    """Φ(z) through math.erf, element by element: for the few jobs a bisection step touches."""
    return 0.5 * (1.0 + _erf(np.asarray(z, float) / math.sqrt(2.0)))


_erf = np.vectorize(math.erf, otypes=[float])


def blom_max_z(n: np.ndarray | float) -> np.ndarray:
    """Where the largest of ``n`` standard normals sits: Φ⁻¹((n − 0.375)/(n + 0.25)); 0 for n = 1."""
    n = np.asarray(n, float)
    if np.any(n < 1):
        raise ValueError("the max needs at least one GPU (n >= 1)")
    return norm_ppf((n - 0.375) / (n + 0.25))


def ring_allreduce_s(size_bytes: np.ndarray | float, n: np.ndarray | float, bytes_per_s: np.ndarray | float,
                     alpha_s: np.ndarray | float) -> np.ndarray:
    """Seconds a ring all-reduce of ``size_bytes`` over ``n`` ranks takes: 2(N−1)/N·S/B + 2(N−1)·α (0 for N = 1)."""
    n = np.asarray(n, float)
    bw = np.asarray(bytes_per_s, float)
    if np.any(n < 1) or np.any(bw <= 0):
        raise ValueError("a ring needs n >= 1 ranks and a positive bandwidth")
    return 2.0 * (n - 1.0) / n * np.asarray(size_bytes, float) / bw + 2.0 * (n - 1.0) * np.asarray(alpha_s, float)


def exposed_comm(comm: np.ndarray | float, overlap: float, backward: np.ndarray | float) -> np.ndarray:
    """The communication the step waits for: ``comm − min(overlap·comm, backward)`` (any time unit)."""
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap is a fraction of the communication, got {overlap}")
    comm = np.asarray(comm, float)
    return comm - np.minimum(overlap * comm, np.asarray(backward, float))


def expected_max_lognormal(mu: np.ndarray | float, sigma: float, n: np.ndarray | float) -> np.ndarray:
    """E[max] of ``n`` i.i.d. lognormals with log-mean ``mu`` and log-spread ``sigma`` (Blom's quantile)."""
    if sigma < 0:
        raise ValueError("sigma is a spread, >= 0")
    return np.exp(np.asarray(mu, float) + sigma * blom_max_z(n))


def job_expected_max(log_mu: np.ndarray, job: np.ndarray, sigma: float, n_jobs: int,
                     count: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """E[max] of each job's GPUs, whose compute times are lognormal with log-means ``log_mu`` and spread σ.

    One entry per GPU, or per group of ``count[k]`` GPUs sharing a log-mean (a job's GPUs at full clock are
    one group: the cost is then per group, not per GPU). ``job[k]`` is the entry's job (0 … n_jobs−1; every job
    needs a GPU). Returns ``(e_max, n_eff)``: the expected slowest compute per job and the effective number of
    GPUs competing to be it. The level ``z`` and the count it weighs with depend on each other
    (``z = Blom(n_eff(z))``, ``n_eff`` falling as ``z`` rises), so ``z`` is bisected, all jobs at once.
    """
    if sigma < 0:
        raise ValueError("sigma is a spread, >= 0")
    log_mu = np.asarray(log_mu, float)
    c = np.ones(len(log_mu)) if count is None else np.asarray(count, float)
    n = np.bincount(job, weights=c, minlength=n_jobs)
    if np.any(n < 1):
        raise ValueError("every job needs at least one GPU")
    top = np.full(n_jobs, -np.inf)
    np.maximum.at(top, job, np.where(c > 0, log_mu, -np.inf))
    if sigma == 0.0:
        return np.exp(top), np.ones(n_jobs)
    d = (top[job] - log_mu) / sigma
    n_eff = n.copy()  # a job whose GPUs all share one log-mean: every one of them competes
    mixed = np.bincount(job, weights=(d > 0) & (c > 0), minlength=n_jobs) > 0
    if mixed.any():
        keep = mixed[job]
        sub = np.cumsum(mixed) - 1  # job id -> its place among the mixed jobs
        jb, dk, ck, m = sub[job[keep]], d[keep], c[keep], int(mixed.sum())
        lo, hi = np.zeros(m), blom_max_z(n[mixed])
        for _ in range(20):
            z = 0.5 * (lo + hi)
            count = np.maximum(np.bincount(jb, weights=ck * np.exp(-z[jb] * dk - 0.5 * dk * dk), minlength=m), 1.0)
            above = _norm_cdf(z) > (count - 0.375) / (count + 0.25)  # z above Blom's quantile of the count
            hi, lo = np.where(above, z, hi), np.where(above, lo, z)
        n_eff[mixed] = np.maximum(np.bincount(jb, weights=ck * np.exp(-lo[jb] * dk - 0.5 * dk * dk), minlength=m), 1.0)
    return np.exp(top + sigma * blom_max_z(n_eff)), n_eff


def jitter_wait_gpu_s(e_max: np.ndarray, log_mu: np.ndarray, job: np.ndarray,
                      count: np.ndarray | None = None) -> np.ndarray:
    """Time units × GPUs each job's GPUs spend a step waiting at the barrier: Σ_i (E[max] − exp(μ_i)).

    Entries as in :func:`job_expected_max` (``count`` GPUs per entry, 1 when omitted). Each GPU's own time is
    taken by the same rule as the max, Blom's quantile for one GPU (its median ``exp(μ_i)``), so a lone GPU
    waits for nobody and the wait is never negative.
    """
    c = np.ones(len(log_mu)) if count is None else np.asarray(count, float)
    own = np.exp(np.asarray(log_mu, float))
    return np.bincount(job, weights=c * (np.asarray(e_max, float)[job] - own), minlength=len(e_max))


def gpu_hours_per_hour(wait_gpu_s_per_step: np.ndarray | float, step_s: np.ndarray | float) -> np.ndarray:
    """GPU-hours lost per wall-clock hour to a wait of ``wait_gpu_s_per_step`` every ``step_s``-second step."""
    return np.asarray(wait_gpu_s_per_step, float) / np.asarray(step_s, float)
