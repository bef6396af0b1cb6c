"""Collectives (actors/twin/collectives.py) and the job step the simulator prices with them.

Monte-Carlo seeds 17701–17710 are used by no other test.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from actors.twin import collectives as coll
from actors.twin.physics import BACKWARD_SHARE, COMM_OVERLAP, COMPUTE_SPREAD, FleetPhysics, Topology


def test_norm_ppf_matches_the_standard_library() -> None:
    ps = np.array([1e-7, 0.001, 0.02425, 0.1, 0.5, 0.7, 0.975, 0.999999])
    assert np.allclose(coll.norm_ppf(ps), [NormalDist().inv_cdf(float(p)) for p in ps], atol=5e-5)
    with pytest.raises(ValueError):
        coll.norm_ppf(1.0)


@pytest.mark.parametrize("n", [2, 8, 64])
def test_ring_all_reduce_is_2_n_minus_1_over_n_s_over_b_plus_2_n_minus_1_alpha(n: int) -> None:
    size, bw, alpha = 1e9, 50e9, 5e-6
    want = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha
    assert float(coll.ring_allreduce_s(size, n, bw, alpha)) == pytest.approx(want, rel=1e-12)
    # vectorised over jobs, and one rank needs no all-reduce
    got = coll.ring_allreduce_s(np.array([size, size]), np.array([n, 1]), np.array([bw, bw]), alpha)
    assert got[0] == pytest.approx(want) and got[1] == 0.0


def test_bandwidth_by_link_type_per_direction() -> None:
    assert coll.LINK_BYTES_PER_S == {"nvlink": 450e9, "pcie": 64e9, "ib": 50e9}
    t = {k: float(coll.ring_allreduce_s(1e9, 8, b, 0.0)) for k, b in coll.LINK_BYTES_PER_S.items()}
    assert t["ib"] / t["nvlink"] == pytest.approx(9.0) and t["pcie"] / t["nvlink"] == pytest.approx(450 / 64)
    with pytest.raises(ValueError):
        coll.ring_allreduce_s(1e9, 0, 50e9, 0.0)


def test_overlap_hides_up_to_the_backward_pass_then_adds_one_for_one() -> None:
    assert float(coll.exposed_comm(60.0, 0.5, 46.0)) == 30.0  # half hidden, the backward pass has room
    assert float(coll.exposed_comm(200.0, 0.5, 46.0)) == 154.0  # the backward pass is full: the rest shows
    with pytest.raises(ValueError):
        coll.exposed_comm(60.0, 1.5, 46.0)


@pytest.mark.parametrize("n", [2, 8, 64, 1024])
@pytest.mark.parametrize("sigma", [0.03, 0.1, 0.3])
def test_expected_max_of_lognormals_matches_monte_carlo_within_3_percent(n: int, sigma: float) -> None:
    rng = np.random.default_rng(17701 + n % 97)
    draws = 400_000 // n
    mc = float(np.exp(1.5 + sigma * rng.normal(size=(draws, n))).max(axis=1).mean())
    assert float(coll.expected_max_lognormal(1.5, sigma, n)) == pytest.approx(mc, rel=0.03)
    e, n_eff = coll.job_expected_max(np.full(n, 1.5), np.zeros(n, int), sigma, 1)  # identical GPUs: count is N
    assert e[0] == pytest.approx(mc, rel=0.03) and n_eff[0] == pytest.approx(n)


@pytest.mark.parametrize(("n", "slow", "factor", "sigma"),
                         [(64, 1, 0.9, 0.06), (12, 1, 0.9, 0.06), (64, 8, 0.97, 0.06), (1024, 1, 0.95, 0.06),
                          (8, 1, 0.95, 0.1), (64, 1, 0.8, 0.3), (64, 1, 0.5, 0.06)])
def test_a_job_with_slowed_gpus_matches_monte_carlo_within_3_percent(n: int, slow: int, factor: float,
                                                                    sigma: float) -> None:
    rng = np.random.default_rng(17705 + n + slow)
    mu = np.zeros(n)
    mu[:slow] = -np.log(factor)  # a GPU at clock factor f computes 1/f as long
    mc = float(np.exp(mu + sigma * rng.normal(size=(400_000 // n, n))).max(axis=1).mean())
    e, _ = coll.job_expected_max(mu, np.zeros(n, int), sigma, 1)
    assert e[0] == pytest.approx(mc, rel=0.03)
    # The slowest GPU alone and its peers alone are both under it: the barrier prices both.
    assert e[0] >= np.exp(mu.max()) and e[0] > float(coll.expected_max_lognormal(0.0, sigma, n - slow)) * 0.999


def test_groups_of_gpus_give_what_one_entry_per_gpu_gives_and_no_spread_is_the_plain_max() -> None:
    mu = np.array([0.0] * 30 + [0.1] + [0.0] * 33 + [0.05] * 4)
    job = np.array([0] * 64 + [1] * 4)
    each, _ = coll.job_expected_max(mu, job, 0.06, 2)
    grouped, _ = coll.job_expected_max(np.array([0.0, 0.1, 0.05]), np.array([0, 0, 1]), 0.06, 2,
                                       count=np.array([63, 1, 4]))
    assert np.allclose(each, grouped)
    assert np.allclose(coll.job_expected_max(mu, job, 0.0, 2)[0], np.exp([0.1, 0.05]))


def test_jitter_wait_in_gpu_hours_is_what_the_formula_says() -> None:
    """A healthy 64-GPU job: each GPU waits E[max] − its own median time, every step, at the barrier."""
    p = FleetPhysics(Topology.build(8, 8).with_jobs(8))
    p.step(1.0)
    median_ms = p.compute_ms * np.exp(-COMPUTE_SPREAD * float(coll.blom_max_z(64)))
    wait_gpu_s = 64 * (p.compute_ms - median_ms) / 1e3
    assert p.jitter_wait_gpu_s[0] == pytest.approx(wait_gpu_s, rel=1e-9)
    step_s = p.step_ms[0] / 1e3
    per_hour = float(coll.gpu_hours_per_hour(p.jitter_wait_gpu_s[0], step_s))
    assert per_hour == pytest.approx(wait_gpu_s / step_s, rel=1e-9)
    assert 1.0 < per_hour < 64.0  # a real share of the job, under the whole job
    # A lone GPU waits for nobody.
    lone = FleetPhysics(Topology.build(2, 1).with_jobs(1))
    lone.step(1.0)
    assert np.allclose(lone.jitter_wait_gpu_s, 0.0)


@pytest.mark.parametrize(("nodes", "gpus", "job_nodes"), [(1, 8, 1), (3, 4, 3), (16, 8, 4), (4, 1, 1)])
def test_a_healthy_job_keeps_the_default_100_ms_step_whatever_its_size(nodes: int, gpus: int, job_nodes: int) -> None:
    p = FleetPhysics(Topology.build(nodes, gpus).with_jobs(job_nodes))
    p.step(1.0)
    assert np.allclose(p.step_ms, p.compute_ms + p.comm_ms) and p.compute_ms + p.comm_ms == 100.0


def test_a_slow_link_raises_exposed_comm_by_the_ring_formula() -> None:
    """Two nodes × 4 GPUs: the ring's bottleneck is the InfiniBand link between them (50 GB/s); at a quarter of
    its bandwidth the bandwidth term is 4×, the backward pass hides what it can and the rest shows."""
    p = FleetPhysics(Topology.build(2, 4).with_jobs(2))
    p.step(1.0)
    healthy = float(p.step_ms[0])
    ib = next(i for i, name in enumerate(p.link_names) if name.endswith("/ib0"))
    p.link_frac[ib] = 0.25
    p.step(1.0)
    n, alpha = 8, coll.LINK_ALPHA_S["ib"]
    total_ms = p.comm_ms / (1 - COMM_OVERLAP)  # the whole all-reduce at nominal (exposed 30 ms)
    latency_ms = 2 * (n - 1) * alpha * 1e3
    slow_ms = (total_ms - latency_ms) * 4 + latency_ms
    exposed = slow_ms - min(COMM_OVERLAP * slow_ms, BACKWARD_SHARE * p.compute_ms)
    assert float(p.step_ms[0]) == pytest.approx(p.compute_ms + exposed, rel=1e-9)
    assert float(p.step_ms[0]) - healthy > 3 * p.comm_ms
    # The NVLink fabric of a node at 10 % (45 GB/s) is now slower than the IB link at full: it paces the ring.
    p.link_frac[:] = 1.0
    p.link_frac[p.link_names.index("n01/nvlink")] = 0.1
    p.step(1.0)
    slow_ms = (total_ms - latency_ms) * 50 / 45 + latency_ms
    assert float(p.step_ms[0]) == pytest.approx(p.compute_ms + slow_ms * (1 - COMM_OVERLAP), rel=1e-9)


def test_a_throttled_gpu_is_priced_against_its_peers_jitter() -> None:
    """One GPU at 0.9× in a 64-GPU job: slower than the healthy job, less than the deterministic 1/0.9 (its
    peers' jitter already made the job wait), and what job_expected_max says for that job."""
    p = FleetPhysics(Topology.build(8, 8).with_jobs(8))
    p.step(1.0)
    ratio = np.ones(64)
    ratio[5] = 0.9
    step = float(p.job_step_ms(ratio)[0])
    assert p.compute_ms + p.comm_ms < step < p.compute_ms / 0.9 + p.comm_ms
    log_m = np.log(p.compute_ms) - COMPUTE_SPREAD * float(coll.blom_max_z(64))
    e, _ = coll.job_expected_max(log_m - np.log(ratio), np.zeros(64, int), COMPUTE_SPREAD, 1)
    assert step == pytest.approx(e[0] + p.comm_ms, rel=1e-9)
