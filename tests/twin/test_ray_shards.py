"""The sharded twin on a real local Ray: two shard actors over the simulator, events and barrier stats."""

from __future__ import annotations

import json
import shutil
import tempfile
import time

import pytest
import redis

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_two_shards_over_the_simulator(redis_url: str) -> None:
    import ray

    from actors.remote import RemotePort
    from actors.twin.physics import Topology
    from cluster.settings import Settings
    from cluster.sources import SimSource
    from cluster.telemetry.sim import Fault, Simulator, SimulatorService
    from cluster.twin_deploy import start_twin

    tmp = tempfile.mkdtemp(prefix="ol-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=tmp, namespace="tshard",
             log_to_driver=False)
    try:
        settings = Settings(namespace="tshard", sim_nodes=2, sim_gpus_per_node=4, data_dir=tmp)
        sim = ray.remote(SimulatorService).options(num_cpus=0).remote(
            Simulator(Topology.build(2, 4), [Fault.parse("cooling_degradation@5:n01=0.5")]), 200.0)
        twin = start_twin(settings, SimSource(RemotePort(sim)), redis_url, n_shards=2)
        deadline = time.monotonic() + 120
        kinds: set[str] = set()
        while time.monotonic() < deadline and "thermal_slowdown_predicted" not in kinds:
            ray.get(twin.step.remote(), timeout=60)
            kinds = {e["kind"] for e in ray.get(twin.recent_events.remote(500), timeout=30)}
            time.sleep(0.1)
        assert {"cooling_degraded", "thermal_slowdown_predicted"} <= kinds
        status = ray.get(twin.status.remote(), timeout=30)
        assert status["gpus"] == 8 and set(status["shards"]) == {"s01", "s02"}
        b = status["barrier"]
        assert b["ticks"] > 0 and b["shards"] == 2 and b["slowest_shard"] in ("s01", "s02")
        assert b["mean_wait_ms"] >= 0 and 0 < b["efficiency"] <= 1
        print("barrier", b)
        assert ray.get_actor("twin-s01", namespace="tshard") is not None
        assert sorted(ray.get(twin.topology.remote(), timeout=30)["node"]) == ["n01", "n02"]

        # A killed shard is spawned again by the coordinator and resumes from its checkpoint; a killed coordinator
        # is restarted by Ray (its shards die with it: it owns them) and resumes from the last commit.
        r = redis.Redis.from_url(redis_url)
        old = ray.get_actor("twin-s02", namespace="tshard")._actor_id
        for victim in ("shard", "coordinator"):
            before = ray.get(twin.status.remote(), timeout=30)
            if victim == "shard":
                ray.kill(ray.get_actor("twin-s02", namespace="tshard"), no_restart=True)
            else:
                ray.kill(twin, no_restart=False)
            deadline = time.monotonic() + 120
            status = before
            while time.monotonic() < deadline and status["ts"] <= before["ts"] + 5:
                try:
                    ray.get(twin.step.remote(), timeout=60)
                    status = ray.get(twin.status.remote(), timeout=30)
                except (ray.exceptions.RayError, RuntimeError):
                    time.sleep(0.2)  # the dead shard fails this tick once; the coordinator may be restarting
            assert status["ts"] > before["ts"] + 5, f"the twin did not go on after the {victim} was killed"
            assert status["samples_seen"] > before["samples_seen"], "the model started afresh"
            assert ray.get_actor("twin-s02", namespace="tshard")._actor_id != old
            ids = [json.loads(f[b"event"])["event_id"] for _, f in r.xrange("tshard:events")]
            assert len(ids) == len(set(ids)), "an event was appended twice"
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        redis.Redis.from_url(redis_url).close()
