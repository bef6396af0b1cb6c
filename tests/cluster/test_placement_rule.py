"""The shard placement rule, without Ray."""

from __future__ import annotations

from cluster.twin_deploy import shard_nodes


def nodes(*ids: str) -> list[dict]:
    return [{"node_id": i, "address": "10.0.0.1", "head": i == ids[0]} for i in ids]


def test_one_shard_per_node() -> None:
    assert shard_nodes(["s01", "s02", "s03"], nodes("h", "w1", "w2")) == {"s01": "h", "s02": "w1", "s03": "w2"}


def test_one_node_takes_every_shard() -> None:
    assert set(shard_nodes(["s01", "s02"], nodes("h")).values()) == {"h"}


def test_more_shards_than_nodes_round_robin() -> None:
    assert list(shard_nodes(["s1", "s2", "s3"], nodes("a", "b")).values()) == ["a", "b", "a"]
    assert shard_nodes(["s1"], []) == {}
