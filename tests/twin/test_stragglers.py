"""Stragglers on generated 64-GPU jobs: no false alarms from healthy jitter, a slow GPU named fast, blame by cost.

The traces are generated here with seeds no other test uses (17041–17052, and 17401 for the lockstep day),
so the detector's constants (:mod:`actors.twin.network`) cannot have been tuned on them. A job of 8 nodes ×
8 GPUs steps once a second: 700 ms of compute at full clock (its slowest GPU sets it) plus a 300 ms
all-reduce (its slowest link sets it), times ``1 + 0.02·N(0, 1)`` of step jitter; GPU clocks wander 0.1 %
around 1980 MHz.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.twin.network import CONFIRM_OF, WINDOW, NetworkModel
from actors.twin.state import StateError, load, pack
from cluster.telemetry.samples import JobSample, LinkSample

GPUS = tuple(f"n{n:02d}/gpu{g}" for n in range(1, 9) for g in range(8))
INDEX = {g: i for i, g in enumerate(GPUS)}
F_MAX = 1980.0
COMPUTE_MS, COMM_MS, JITTER = 700.0, 300.0, 0.02
DAY_SEED, ONSET_SEEDS, BLAME_SEED, LOCKSTEP_SEED = 17041, (17042, 17043, 17044, 17045, 17046), 17047, 17401
CULPRIT, NEIGHBOUR = "n05/gpu3", "n05/gpu2"
BASE = JobSample(kind="job", ts=0.0, job="job01", gpus=GPUS, step_ms=1000.0)


class Job:
    """A generated job: per step, the GPUs' clocks and the step time they (and the links) give."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.slow: dict[str, float] = {}  # GPU → clock factor
        self.link_frac = 1.0

    def step(self, dips: dict[str, float] | None = None) -> tuple[np.ndarray, float]:
        clocks = F_MAX * np.minimum(1.0, 1.0 - np.abs(self.rng.normal(0.0, 0.001, len(GPUS))))
        for g, f in {**self.slow, **(dips or {})}.items():
            clocks[INDEX[g]] *= f
        step = COMPUTE_MS * float(np.max(F_MAX / clocks)) + COMM_MS / self.link_frac
        return clocks, step * (1.0 + JITTER * float(self.rng.normal()))


def feed(net: NetworkModel, k: int, clocks: np.ndarray, step_ms: float) -> list:
    return net.ingest(BASE.model_copy(update={"ts": float(k), "step_ms": step_ms}), clocks, INDEX)


def run(job: Job, net: NetworkModel, steps: range, dips: dict[int, dict[str, float]] | None = None) -> list:
    return [e for k in steps for e in feed(net, k, *job.step((dips or {}).get(k)))]


def test_a_healthy_job_raises_at_most_one_false_straggler_a_day() -> None:
    """86 400 one-second steps with 2 % jitter (the clocks held still: they only matter for the blame)."""
    rng = np.random.default_rng(DAY_SEED)
    steps = 1000.0 * (1.0 + JITTER * rng.normal(size=86_400))
    clocks = np.full(len(GPUS), F_MAX)
    net = NetworkModel()
    events = [e for k, x in enumerate(steps) for e in feed(net, k, clocks, float(x))]
    assert len(events) <= 1, [(e.ts, e.data["step_ms"], e.data["threshold_ms"]) for e in events]
    js = net.jobs["job01"]  # the baseline it ended with: the healthy median and 2 % spread
    assert js.baseline_ms == pytest.approx(1000.0, rel=0.005) and js.spread_ms == pytest.approx(20.0, rel=0.15)


def test_a_lockstep_job_with_lognormal_gpu_jitter_raises_at_most_one_false_straggler_a_day() -> None:
    """The step is the slowest of 64 lognormal compute times (σ = 0.06) plus the all-reduce: a right-skewed
    step (a max has a heavier upper tail than a Gaussian) at 2 % spread, over 86 400 one-second steps."""
    rng = np.random.default_rng(LOCKSTEP_SEED)
    compute = COMPUTE_MS * np.exp(0.06 * rng.normal(size=(86_400, len(GPUS))) - 0.0018).max(axis=1)
    steps = compute + COMM_MS * (1.0 + 0.005 * rng.normal(size=86_400))
    assert steps.std() / steps.mean() == pytest.approx(JITTER, rel=0.05)  # the 2 % spread the acceptance names
    assert np.mean(steps - np.median(steps)) > 0  # skewed to the slow side
    clocks = np.full(len(GPUS), F_MAX)
    net = NetworkModel()
    events = [e for k, x in enumerate(steps) for e in feed(net, k, clocks, float(x))]
    assert len(events) <= 1, [(e.ts, e.data["step_ms"], e.data["threshold_ms"]) for e in events]


@pytest.mark.parametrize("seed", ONSET_SEEDS)
def test_one_gpu_at_0_9x_clock_is_named_within_10_steps(seed: int) -> None:
    job, net = Job(seed), NetworkModel()
    onset = WINDOW + 44
    assert run(job, net, range(onset)) == []
    job.slow[CULPRIT] = 0.9
    events = run(job, net, range(onset, onset + 10))
    assert len(events) == 1, "named within 10 steps of the slowdown"
    ev = events[0]
    assert ev.kind == "straggler" and ev.subject == "job01"
    assert ev.data["culprit"] == CULPRIT and ev.data["culprit_kind"] == "gpu"
    assert ev.data["slowdown_x"] == pytest.approx(1 / 0.9, rel=0.01)
    assert 0.8 <= ev.data["cost_share"] <= 1.0  # the whole loss is its excess compute
    assert ev.data["baseline_ms"] == pytest.approx(1000.0, rel=0.01) and ev.data["gpus"] == 64
    # Its price: ~77.8 ms of extra compute a step (700 ms × (1/0.9 − 1)) that its 63 peers wait at the barrier,
    # 4.9 GPU-s a step, so ~4.5 GPU-hours an hour at a ~1.08 s step.
    excess = COMPUTE_MS * (1 / 0.9 - 1)
    assert ev.data["excess_ms"] == pytest.approx(excess, rel=0.03)
    assert ev.data["wait_gpu_s"] == pytest.approx(excess * 63 / 1000, rel=0.03)
    assert ev.data["gpu_h_per_h"] == pytest.approx(excess * 63 / (1000 + excess), rel=0.05)
    # One event an episode: the slow GPU staying slow raises nothing more.
    assert run(job, net, range(onset + 10, onset + 400)) == []


def test_a_neighbours_momentary_dip_at_the_event_does_not_take_the_blame() -> None:
    """Replayed with a neighbour at 0.8× on exactly the step the event fires: slower than the culprit at that
    instant (the old ratio-at-one-instant blame would name it), but not over the steps that were over."""
    onset = WINDOW + 44
    first, net = Job(BLAME_SEED), NetworkModel()
    run(first, net, range(onset))
    first.slow[CULPRIT] = 0.9
    fired = next(int(e.ts) for e in run(first, net, range(onset, onset + 10)))
    again, net = Job(BLAME_SEED), NetworkModel()
    run(again, net, range(onset))
    again.slow[CULPRIT] = 0.9
    events = run(again, net, range(onset, fired + 1), dips={fired: {NEIGHBOUR: 0.8}})
    assert [int(e.ts) for e in events] == [fired]
    assert events[0].data["culprit"] == CULPRIT
    clocks = net.jobs["job01"].clocks[-1]
    assert clocks[INDEX[NEIGHBOUR]] < clocks[INDEX[CULPRIT]]  # the neighbour was the slower one right then


def test_blame_goes_by_cost_not_by_slowdown_ratio() -> None:
    """A link at 0.8 (1.25× slower, costs 0.3 × 25 % = 7.5 % of a step) beside a GPU at 0.85× (1.18× slower,
    costs 0.7 × 18 % = 12 %): the GPU costs more and is the culprit, though its ratio is the smaller."""
    job, net = Job(BLAME_SEED + 1), NetworkModel()
    link = LinkSample(kind="link", ts=0.0, link="n01-n02/ib0", type="ib", bandwidth_gbps=400.0, errors=0)
    net.ingest(link, np.zeros(0), INDEX)
    run(job, net, range(WINDOW))
    job.slow[CULPRIT], job.link_frac = 0.85, 0.8
    net.ingest(link.model_copy(update={"bandwidth_gbps": 320.0}), np.zeros(0), INDEX)
    events = run(job, net, range(WINDOW, WINDOW + 10))
    assert len(events) == 1 and events[0].data["culprit"] == CULPRIT and events[0].data["culprit_kind"] == "gpu"
    assert events[0].data["cost_share"] == pytest.approx(700 * (1 / 0.85 - 1) / (700 * (1 / 0.85 - 1) + 75), abs=0.1)
    # The same link at 0.5 costs 30 % of a step: now it is the culprit.
    job2, net2 = Job(BLAME_SEED + 2), NetworkModel()
    net2.ingest(link, np.zeros(0), INDEX)
    run(job2, net2, range(WINDOW))
    job2.slow[CULPRIT], job2.link_frac = 0.85, 0.5
    net2.ingest(link.model_copy(update={"bandwidth_gbps": 200.0}), np.zeros(0), INDEX)
    events = run(job2, net2, range(WINDOW, WINDOW + 10))
    assert len(events) == 1 and events[0].data["culprit"] == "n01-n02/ib0"
    assert events[0].data["culprit_kind"] == "link" and events[0].data["slowdown_x"] == 2.0


def test_an_episode_closes_and_a_new_slowdown_is_reported_again() -> None:
    job, net = Job(BLAME_SEED + 3), NetworkModel()
    run(job, net, range(WINDOW))
    job.slow[CULPRIT] = 0.8
    assert len(run(job, net, range(WINDOW, WINDOW + 20))) == 1
    del job.slow[CULPRIT]  # it recovers: steps fall under the line, the episode closes
    assert run(job, net, range(WINDOW + 20, 3 * WINDOW)) == []
    assert not net.jobs["job01"].straggling
    job.slow[NEIGHBOUR] = 0.8
    events = run(job, net, range(3 * WINDOW, 3 * WINDOW + 10))
    assert len(events) == 1 and events[0].data["culprit"] == NEIGHBOUR


def test_the_straggler_state_survives_a_checkpoint() -> None:
    job, net = Job(BLAME_SEED + 4), NetworkModel()
    run(job, net, range(WINDOW + 3))
    job.slow[CULPRIT] = 0.9
    run(job, net, range(WINDOW + 3, WINDOW + 6))  # mid-confirmation: some steps already over
    twin = load(pack("net", net.to_state()), "net", "test", NetworkModel.from_state)
    assert twin.to_state() == net.to_state()
    rest = [(k, *job.step()) for k in range(WINDOW + 6, WINDOW + 20)]
    a = [e.to_json() for k, c, x in rest for e in feed(net, k, c, x)]
    b = [e.to_json() for k, c, x in rest for e in feed(twin, k, c, x)]
    assert a == b and len(a) == 1


def test_bad_job_state_is_a_clear_error() -> None:
    job, net = Job(BLAME_SEED + 5), NetworkModel()
    run(job, net, range(CONFIRM_OF))
    state = net.to_state()
    state["jobs"]["job01"]["clocks"][0] = [F_MAX]  # one clock where the job has 64 GPUs
    with pytest.raises(StateError, match="clocks"):
        NetworkModel.from_state(state)


def test_the_price_matches_a_hand_computation_on_a_tiny_job() -> None:
    """4 GPUs, a steady 1000 ms step (median 1000, MAD 0: the line is the 2 % floor, 1020 ms), then one GPU at
    0.8× clock and 1200 ms steps. By hand: its extra compute is 0.7 × 1000 × (2000/1600 − 1) = 175 ms a step,
    of the 200 ms the job lost (cost share 0.875); its 3 peers wait 3 × 0.175 = 0.525 GPU-s a step, which at
    1.2 s a step is 0.4375 GPU-hours an hour. The link it crosses runs at full bandwidth and costs nothing."""
    gpus = ("n01/gpu0", "n01/gpu1", "n01/gpu2", "n01/gpu3")
    index = {g: i for i, g in enumerate(gpus)}
    net = NetworkModel()
    net.ingest(LinkSample(kind="link", ts=0.0, link="n01/nvlink", type="nvlink", bandwidth_gbps=7200.0,
                          errors=0),
               np.zeros(0), index)
    sample = JobSample(kind="job", ts=0.0, job="tiny", gpus=gpus, step_ms=1000.0)
    healthy, slow = np.full(4, 2000.0), np.array([2000.0, 2000.0, 2000.0, 1600.0])
    events = [e for k in range(30) for e in net.ingest(sample.model_copy(update={"ts": float(k)}), healthy, index)]
    events += [e for k in range(30, 36) for e in net.ingest(
        sample.model_copy(update={"ts": float(k), "step_ms": 1200.0}), slow, index)]
    assert [e.ts for e in events] == [35.0]  # the sixth step over the line
    d = events[0].data
    assert (d["culprit"], d["culprit_kind"], d["gpus"]) == ("n01/gpu3", "gpu", 4)
    assert (d["baseline_ms"], d["spread_ms"], d["threshold_ms"]) == (1000.0, 0.0, 1020.0)
    assert d["slowdown_x"] == 1.25 and d["excess_ms"] == pytest.approx(175.0)
    assert d["cost_share"] == pytest.approx(0.875) and d["wait_gpu_s"] == pytest.approx(0.525)
    assert d["gpu_h_per_h"] == pytest.approx(0.4375, abs=1e-3)  # events carry 3 decimals
