"""GPU-steps per second of ``FleetPhysics.step`` at 1k, 10k and 100k GPUs, beside a numpy floor.

The floor is one fused pass over arrays of the same size (clock → power → die → sensor, the minimum any
vectorised step must do), measured in the same run. Usage: ``python bench/twin_step.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actors.twin.physics import FleetPhysics, Topology


def _rate(fn, n_gpu: int, seconds: float) -> float:  # noqa: ANN001
    fn()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        steps += 1
    return steps * n_gpu / (time.perf_counter() - t0)


def floor_step(n: int):  # noqa: ANN201
    """One fused pass: the least work a vectorised tick does per GPU."""
    clock, temp, sensed = np.full(n, 1980.0), np.full(n, 60.0), np.full(n, 60.0)
    a_die, a_s = 1 - np.exp(-1 / 20), 1 - np.exp(-1 / 15)

    def step() -> None:
        power = 80.0 + 620.0 * (clock / 1980.0) ** 3
        temp[:] += (25.0 + power * 0.07 - temp) * a_die
        sensed[:] += (temp - sensed) * a_s

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per size (split into slices)")
    ap.add_argument("--slices", type=int, default=9, help="alternating twin/floor slices; the median ratio is kept")
    args = ap.parse_args()
    print(f"{'GPUs':>8} {'twin GPU-steps/s':>18} {'floor GPU-steps/s':>18} {'ratio':>6}")
    for n in (1_000, 10_000, 100_000):
        p = FleetPhysics(Topology.build(n // 8, 8, n_units=max(n // 64, 1)))
        floor_fn = floor_step(n)
        # Alternate short slices so both see the same machine (it is shared and noisy); keep medians.
        slice_s = args.seconds / args.slices
        pairs = [(_rate(lambda p=p: p.step(1.0), n, slice_s), _rate(floor_fn, n, slice_s)) for _ in range(args.slices)]
        twin = float(np.median([t for t, _ in pairs]))
        floor = float(np.median([f for _, f in pairs]))
        ratio = float(np.median([t / f for t, f in pairs]))
        print(f"{n:>8} {twin:>18,.0f} {floor:>18,.0f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
