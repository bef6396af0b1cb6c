"""What the twin's per-tick checkpoint costs, against the tick's own work, measured in the same run.

Usage: .venv/bin/python bench/twin_checkpoint.py [--sizes 8,128,1024] [--ticks 60]

For a shard of N GPUs fed by the simulator: the tick's work (``ShardCore.work``: fold the samples, detect) is
the baseline; the checkpoint is what a shard adds every tick (its model and answer as versioned msgpack,
``actors/twin/state.py``, ``SET`` in a private Redis server on a Unix socket). Prints medians per tick, the
checkpoint's size and the ratio checkpoint / work. The coordinator's checkpoint (fleet model, barrier, tick) is
measured the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos import RedisServer  # noqa: E402

from actors.twin.physics import Topology  # noqa: E402
from actors.twin.shard_service import CKPT_KIND, SHARD_KIND  # noqa: E402
from actors.twin.shards import ShardCore, ShardedTwin  # noqa: E402
from actors.twin.state import pack  # noqa: E402
from cluster.telemetry.sim import Simulator  # noqa: E402


def measure(n_gpus: int, ticks: int, r: redis.Redis) -> dict[str, float]:
    per_node = min(n_gpus, 8)
    nodes = max(n_gpus // per_node, 1)
    sim = Simulator(Topology.build(nodes, per_node), seed=1)
    core = ShardCore("s01", [f"n{i + 1:02d}" for i in range(nodes)])
    work, ckpt, size = [], [], 0
    for tick in range(1, ticks + 1):
        samples = sim.step()
        t0 = time.perf_counter()
        result = core.work(tick, samples)
        t1 = time.perf_counter()
        blob = pack(SHARD_KIND, {"core": core.to_state(), "last": result.to_state()})
        r.set("bench:shard", blob)
        t2 = time.perf_counter()
        work.append(t1 - t0)
        ckpt.append(t2 - t1)
        size = len(blob)
    w, c = statistics.median(work), statistics.median(ckpt)
    return {"gpus": nodes * per_node, "work_ms": round(w * 1e3, 3), "checkpoint_ms": round(c * 1e3, 3),
            "checkpoint_kib": round(size / 1024, 1), "ratio": round(c / w, 2)}


def coordinator(ticks: int, r: redis.Redis) -> dict[str, float]:
    """The coordinator's commit payload: the fleet model, barrier (≤ 100 ticks kept) and tick, 2 shards × 4 GPUs."""
    sim = Simulator(Topology.build(2, 4), seed=1)
    twin = ShardedTwin({"s01": ["n01"], "s02": ["n02"]})
    times, size = [], 0
    for _ in range(ticks):
        twin.ingest(sim.step())
        t0 = time.perf_counter()
        fleet = copy.copy(twin)
        fleet.cores = {}  # the Ray coordinator has no cores: its shards are actors with their own checkpoints
        blob = pack(CKPT_KIND, {"twin": fleet.to_state(), "acted": {}, "source": None})
        r.set("bench:coord", blob)
        times.append(time.perf_counter() - t0)
        size = len(blob)
    return {"checkpoint_ms": round(statistics.median(times) * 1e3, 3), "checkpoint_kib": round(size / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8,128,1024", help="GPUs per shard, comma-separated (default 8,128,1024)")
    ap.add_argument("--ticks", type=int, default=60, help="ticks per size; medians are reported (default 60)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="olp-ckpt-", dir="/tmp"))
    server = RedisServer(work)
    r = redis.Redis.from_url(server.url)
    try:
        rows = [measure(int(n), args.ticks, r) for n in args.sizes.split(",")]
        print(json.dumps({"shard": rows, "coordinator": coordinator(args.ticks, r)}, indent=1))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
