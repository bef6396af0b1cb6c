"""GPU-steps per second of the twin's own ingest-and-detect path at 1k, 10k and 100k GPUs, beside a numpy floor.

Setup. A simulated fleet (``FleetPhysics``, 8 GPUs a node, a cooling unit per 64 GPUs) runs jobs of
``--nodes-per-job`` nodes (``Topology.with_jobs``) over every node. A ``--hot`` fraction of nodes has its coolant
flow swing between 50 % and 74 % of nominal on a 5-minute cycle of its own phase, so their GPUs settle from
about 80 °C to 2.5 °C over the slowdown line and back: the thermal, clock-drop and recovery detectors keep
firing throughout. Sensor noise is 0.3 °C. Each tick the twin ingests one :class:`GpuColumns` (every GPU's
temperature, power, power limit, clock, throttle-reason code and XID, one roster built once) and one
``JobSample`` per job; what is timed is ``TwinModel.ingest`` alone: the fleet's physics and the building of the
columns and job samples (the telemetry source's work) are not. Link samples are not sent (see the docs).

The floor is the least numpy work an ingest-and-detect tick does for what the twin computes, fused, on the same
arrays and without gathers or scatters: the screen for every GPU (the estimator's 2-state [sensor, die] Kalman
update and its steady-state fit written element-wise for one fixed tick, ~100 array operations) and the watch
compare; the hypothesis bank's own arithmetic (``ThermalEstimator._step``, ``_summarise`` and ``_crossing``: the
batched 5×5 matrix products) over as many GPUs as the twin watches after the warm-up, on contiguous slots; the
bank's probability against the warning threshold with a confirmation streak; and the jobs' reduction of their
GPUs' clocks by ``np.bincount``. The ratio is twin over floor; slices of the two alternate (the machine is shared
and noisy) and the median ratio is kept. The ``watched`` column is the twin's watched GPUs, averaged over the
slices.

``--what physics`` times the simulator's ``FleetPhysics.step`` instead (with the same jobs and hot nodes).
Usage: ``python bench/twin_step.py [--what twin|physics] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from actors.twin.estimator import EstimatorConfig, ThermalEstimator
from actors.twin.model import TwinModel
from actors.twin.physics import TAU_DIE_S, THROTTLE_REASONS, FleetPhysics, Topology
from cluster.telemetry.samples import GpuColumns, GpuRoster, JobSample

#: Every subset of the physics' throttle reasons, in its order: code = bitmask over THROTTLE_REASONS.
REASON_SETS = tuple(tuple(r for b, r in enumerate(THROTTLE_REASONS) if code >> b & 1)
                    for code in range(1 << len(THROTTLE_REASONS)))
CYCLE_S = 300.0


class Fleet:
    """The simulated fleet and the telemetry it reports each tick, as columns and job samples."""

    def __init__(self, n_gpu: int, nodes_per_job: int, hot: float, seed: int = 1) -> None:
        topo = Topology.build(n_gpu // 8, 8, n_units=max(n_gpu // 64, 1)).with_jobs(nodes_per_job)
        self.p, self.topo, self.t = FleetPhysics(topo), topo, 0.0
        self.rng = np.random.default_rng(seed)
        n_nodes = len(topo.nodes)
        self.hot = self.rng.choice(n_nodes, max(int(hot * n_nodes), 1), replace=False)
        self.phase = self.rng.uniform(0, 2 * np.pi, len(self.hot))
        self.roster = GpuRoster(tuple(np.repeat(topo.nodes, 8).tolist()), tuple(range(8)) * n_nodes,
                                ("H100-SXM",) * (8 * n_nodes))
        names = self.roster.names
        self.job_gpus = [tuple(names[8 * k + g] for k in nodes for g in range(8)) for nodes in topo.jobs]
        self.none = np.full(len(names), -1, np.int64)

    def tick(self) -> list:
        """Advance one second; the samples the twin gets."""
        p = self.p
        self.t += 1.0
        p.flow_frac[self.hot] = 0.62 + 0.12 * np.sin(2 * np.pi * self.t / CYCLE_S + self.phase)
        p.step(1.0)
        code = ((p.power_capped & (p.clock_mhz < p.f_max - 1.0)).astype(np.int64) | p.thermal_capped << 2
                | (p.temp_c >= p.max_operating_c) << 3 | (p.power_w > p.power_limit_w * 1.1) << 4)
        temp = np.round(np.clip(p.sensed_c + self.rng.normal(0.0, 0.3, len(code)), -20, 150), 2)
        cols = GpuColumns(self.roster, np.full(len(code), self.t), temp, np.round(p.power_w, 1), p.power_limit_w,
                          np.round(p.clock_mhz), code, self.none, self.none, REASON_SETS)
        jobs = [JobSample(kind="job", ts=self.t, job=name, gpus=gpus, step_ms=round(float(ms), 3))
                for name, gpus, ms in zip(self.topo.job_names, self.job_gpus, p.step_ms, strict=True)]
        return [cols, *jobs]


def floor_step(fleet: Fleet, watched: int) -> Callable[[list], None]:
    """The fused minimum of an ingest-and-detect tick (see the module docstring) over the fleet's arrays, with the
    bank over ``watched`` GPUs."""
    p, cfg = fleet.p, EstimatorConfig()
    n, dt, td, ts_ = len(p.temp_c), 1.0, TAU_DIE_S, 15.0
    a_s, a_d = np.exp(-dt / ts_), np.exp(-dt / td)
    kap = td / (td - ts_) * (a_d - a_s)
    q, rv, fit_v = cfg.screen_die_psd * dt, cfg.noise_c**2, (cfg.fit_var_c2 + cfg.noise_c**2) * cfg.fit_corr_s / dt
    s, die = p.sensed_c.copy(), p.sensed_c.copy()
    p00, p01, p11 = np.full(n, rv), np.zeros(n), np.full(n, 25.0)
    inlet, b, r = np.full(n, 25.0), p.sensed_c - 25.0 - cfg.r_prior * p.power_w, np.full(n, cfg.r_prior)
    cbb, cbr, crr = np.full(n, cfg.offset_sd**2), np.zeros(n), np.full(n, cfg.r_sd**2)
    pd, td_in, ps, ts_in = p.power_w.copy(), inlet.copy(), p.power_w.copy(), inlet.copy()
    streak = np.zeros(k := max(watched, 1), np.int64)
    job, n_jobs = np.maximum(p.job_of_gpu, 0), max(len(p.step_ms), 1)
    # The bank's own arithmetic (ThermalEstimator._step, _summarise, _crossing) on `watched` contiguous slots.
    bank = ThermalEstimator()
    bank.grow(k)
    rows = np.arange(k)
    bank.power[:], bank.p_bar[:], bank.inlet[:], bank.started[:] = p.power_w[:k], p.power_w[:k], 25.0, True
    bank._start(rows, bank._take(rows), np.zeros(k), p.sensed_c[:k])
    every, lim_k, dt_k = slice(0, k), p.slowdown_c[:k], np.full(k, dt)

    def step(samples: list) -> None:
        cols = samples[0]
        y, pw = cols.temp_c, cols.power_w
        # the screen: 2-state filter, driven toward its fitted steady state
        t_ss = inlet + b + r * pw
        s_p = a_s * s + kap * die + (1.0 - a_s - kap) * t_ss
        d_p = a_d * die + (1.0 - a_d) * t_ss
        P00 = a_s * a_s * p00 + 2.0 * a_s * kap * p01 + kap * kap * (p11 + q / 3.0)
        P01 = a_s * a_d * p01 + kap * (a_d * p11 + q / 2.0)
        P11 = a_d * a_d * p11 + q
        k0, k1 = P00 / (P00 + rv), P01 / (P00 + rv)
        e = y - s_p
        s[:], die[:] = s_p + k0 * e, d_p + k1 * e
        p00[:], p01[:], p11[:] = P00 - k0 * P00, P01 - k0 * P01, P11 - k1 * P01
        # and its fit of the steady state (recursive least squares on the lagged inputs)
        pd[:] += (1.0 - a_d) * (pw - pd)
        td_in[:] += (1.0 - a_d) * (inlet - td_in)
        ps[:] = a_s * ps + kap * pd + (1.0 - a_s - kap) * pw
        ts_in[:] = a_s * ts_in + kap * td_in + (1.0 - a_s - kap) * inlet
        cbb[:] += cfg.offset_psd * dt
        crr[:] += cfg.r_psd * dt
        hb, hr = cbb + ps * cbr, cbr + ps * crr
        S = hb + ps * hr + fit_v
        kb, kr = hb / S, hr / S
        e = y - ts_in - b - r * ps
        b[:], r[:] = b + kb * e, r + kr * e
        cbb[:], cbr[:], crr[:] = cbb - kb * hb, cbr - kb * hr, crr - kr * hr
        (die >= p.slowdown_c - cfg.enter_margin_c) | (t_ss >= p.slowdown_c - cfg.enter_margin_ss_c)  # the watch
        # the bank over the watched
        bank._step(rows, every, dt_k, y[:k])
        bank._summarise(rows, every)
        prob, _ = bank._crossing(rows, every, lim_k, cfg.horizon_s)
        hot = prob >= 0.5
        streak[:] = np.where(hot, streak + 1, 0)
        np.bincount(job, weights=cols.sm_clock_mhz, minlength=n_jobs)

    return step


def _timed(fn: Callable[[list], object], fleet: Fleet, seconds: float) -> tuple[float, int]:
    """GPU-steps per second of ``fn`` over fresh ticks for about ``seconds`` of its own time; events it returned."""
    spent, ticks, events = 0.0, 0, 0
    while spent < seconds:
        samples = fleet.tick()
        t0 = time.perf_counter()
        out = fn(samples)
        spent += time.perf_counter() - t0
        ticks += 1
        events += len(out) if isinstance(out, list) else 0
    return ticks * len(fleet.p.temp_c) / spent, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=("twin", "physics"), default="twin")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per size and side (split into slices)")
    ap.add_argument("--slices", type=int, default=9, help="alternating twin/floor slices; the median ratio is kept")
    ap.add_argument("--nodes-per-job", type=int, default=64, help="job size in 8-GPU nodes")
    ap.add_argument("--hot", type=float, default=0.05, help="fraction of nodes whose coolant flow swings")
    ap.add_argument("--warmup", type=int, default=30, help="ticks ingested before timing (registration, filters)")
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    head = "twin" if args.what == "twin" else "physics"
    print(f"{'GPUs':>8} {'jobs':>5} {'watched':>8} {head + ' GPU-steps/s':>21} {'floor GPU-steps/s':>18} {'ratio':>6}"
          f" {'events':>7}")
    for n in (int(x) for x in args.sizes.split(",")):
        fleet = Fleet(n, args.nodes_per_job, args.hot)
        twin = TwinModel()
        for _ in range(args.warmup):
            twin.ingest(fleet.tick())
        floor_fn = floor_step(fleet, twin.est.k)  # the bank over as many GPUs as the twin watches now
        if args.what == "twin":
            fn: Callable[[list], object] = twin.ingest
        else:
            fn = lambda _samples, p=fleet.p: p.step(1.0)  # noqa: E731
        slice_s = args.seconds / args.slices
        runs, watched = [], []
        for _ in range(args.slices):
            runs.append((_timed(fn, fleet, slice_s), _timed(floor_fn, fleet, slice_s)))
            watched.append(twin.est.k)
        rate = float(np.median([r for (r, _), _ in runs]))
        floor = float(np.median([f for _, (f, _) in runs]))
        ratio = float(np.median([r / f for (r, _), (f, _) in runs]))
        events = sum(e for (_, e), _ in runs)
        print(f"{n:>8} {len(fleet.topo.jobs):>5} {np.mean(watched):>8,.0f} {rate:>21,.0f} {floor:>18,.0f}"
              f" {ratio:>6.2f} {events:>7}")


if __name__ == "__main__":
    main()
