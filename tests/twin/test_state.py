"""The twin's stored state is data, never code: versioned msgpack, validated; a bad value is refused and reported."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis

from actors.twin.shard_service import TwinShard
from actors.twin.shards import ShardCore
from actors.twin.state import StateError, arr, load, pack, unarr
from tests.twin.test_resume import build, log_of, run_to_end


class Planted:
    """A pickle whose loading creates ``path`` (what an attacker with write access to Redis would plant)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.mark.anyio
async def test_a_planted_pickle_never_runs_and_is_reported(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Planted(marker))
    pickle.loads(payload)  # the payload is live: loading it with pickle creates the marker
    assert marker.exists()
    marker.unlink()
    r = redis.Redis.from_url(redis_url)
    for key in ("bad:twin:ckpt", "bad:twin:intent", "bad:twin:shard:s01", "bad:twin:shard:s02"):
        r.set(key, payload)
    twin = build(redis_url, "bad")
    with caplog.at_level(logging.ERROR, logger="opsloop.twin"):
        await run_to_end(twin, steps=60)
    assert not marker.exists(), "a checkpoint was unpickled"
    assert any("bad:twin:ckpt" in m for m in twin.refused) and any("bad:twin:intent" in m for m in twin.refused)
    assert all(twin.shards[s].refused and f"bad:twin:shard:{s}" in twin.shards[s].refused for s in ("s01", "s02"))
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    assert "bad:twin:ckpt" in logged and "bad:twin:shard:s01" in logged
    assert log_of(redis_url, "bad"), "the twin did not go on from a fresh state"
    assert msgpack.unpackb(r.get("bad:twin:ckpt"), strict_map_key=False)["v"] == 1  # replaced by a good one


@pytest.mark.anyio
async def test_a_checkpoint_that_parses_but_does_not_validate_is_refused(redis_url: str) -> None:
    shard = TwinShard("s01", ["n01"], redis_url=redis_url, namespace="inv")
    await run_to_end(build(redis_url, "inv"), steps=20)
    raw = redis.Redis.from_url(redis_url).get("inv:twin:shard:s01")
    doc = msgpack.unpackb(raw, strict_map_key=False)
    doc["core"]["model"]["latest"]["dtype"] = "|O"  # an object array: refused, never interpreted
    redis.Redis.from_url(redis_url).set("inv:twin:shard:s01", msgpack.packb(doc))
    assert await shard.snapshot() is not None
    assert shard.refused and "inv:twin:shard:s01" in shard.refused and "dtype" in shard.refused


def test_states_round_trip_and_bad_ones_say_why() -> None:
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert (unarr(arr(a), "<i2", 2) == a).all()
    with pytest.raises(StateError, match="bytes"):
        unarr({**arr(a), "shape": [3, 3]})
    with pytest.raises(StateError, match="expected a 'twin.shard' state"):
        load(pack("twin.intent", {}), "twin.shard", "k1", dict)
    with pytest.raises(StateError, match="k2: does not parse"):
        load(b"\xc1garbage", "twin.shard", "k2", dict)
    with pytest.raises(StateError, match="k3: invalid twin.shard state"):
        load(pack("twin.shard", {"nodes": ["n01"]}), "twin.shard", "k3", ShardCore.from_state)


@pytest.mark.anyio
async def test_the_simulators_stored_state_is_json_and_a_bad_one_is_refused(redis_url: str, tmp_path: Path) -> None:
    from actors.twin.physics import Topology
    from cluster.telemetry.sim import Simulator, SimulatorService

    marker = tmp_path / "pwned"
    r = redis.Redis.from_url(redis_url)
    for bad in (pickle.dumps(Planted(marker)), b'{"v": 1, "physics": {"temp_c": [1.0]}}', b'{"v": 2}'):
        r.set("sim:state", bad)
        svc = SimulatorService(Simulator(Topology.build(1, 2), seed=1), speed=1e6, redis_url=redis_url,
                               state_key="sim:state")
        assert await svc.read(max_steps=3), "the simulator did not start afresh"
        assert svc.refused and "sim:state" in svc.refused
        assert json.loads(r.get("sim:state"))["v"] == 1
    assert not marker.exists()
