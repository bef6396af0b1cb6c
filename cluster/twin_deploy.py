"""Bring up the sharded twin on Ray: one ``TwinShard`` actor per shard and a ``TwinCoordinator``.

``cluster/deploy.py`` calls :func:`start_twin` in place of the single ``TwinService`` actor; the handle
it returns answers the same methods (``run, stop, step, snapshot, topology, status, recent_events``).
"""

from __future__ import annotations

from typing import Any, Literal

from actors.remote import RemotePort
from actors.twin.model import Thresholds
from actors.twin.shard_service import TwinCoordinator, TwinShard
from actors.twin.shards import partition
from cluster.settings import Settings

#: A shard's CPU request. Not zero: Ray 2.60 places a zero-resource actor anywhere, soft node affinity or not.
SHARD_CPUS = 0.01


def start_twin(
    settings: Settings,
    source: Any,
    redis_url: str,
    n_shards: int | None = None,
    by: Literal["node", "rack"] = "node",
    detached: bool = False,
    max_restarts: int | None = None,
    nodes: list[str] | None = None,
) -> Any:
    """Create the coordinator (named ``twin`` in ``settings.namespace``, on the head); it spawns the shards.

    Args:
        settings: Fleet size, namespace and sensor τ come from here.
        source: The coordinator's ``TelemetrySource`` (e.g. ``SimSource(RemotePort(simulator))``).
        redis_url: The event log's Redis.
        n_shards: Shards to create; default one per node, at most 8.
        by: Partition by node or by rack (the nodes a cooling unit serves).
        detached: Detached actors outlive the process that created them.
        max_restarts: The coordinator's restarts (default: unlimited when detached, else 3).
        nodes: The fleet's node names (default: the simulator's ``n01 …``); a node not named here is still
            folded, in the first shard.

    Returns:
        The coordinator's actor handle (named ``twin``).
    """
    import ray

    nodes = nodes or [f"n{i + 1:02d}" for i in range(settings.sim_nodes)]
    node_unit = {n: f"cu{i % settings.sim_units + 1:02d}" for i, n in enumerate(nodes)}
    count = n_shards or min(len(nodes), 8)
    if by == "rack":
        count = min(count, len(set(node_unit.values())))
    layout = partition(nodes, count, by=by, node_unit=node_unit)
    restarts = max_restarts if max_restarts is not None else (-1 if detached else 3)
    opts: dict[str, Any] = {"namespace": settings.namespace, "num_cpus": SHARD_CPUS, "max_restarts": restarts}
    if detached:
        opts["lifetime"] = "detached"
    spawn = ShardSpawner(layout, settings.namespace, redis_url, settings.sensor_tau_s)
    return ray.remote(TwinCoordinator).options(name="twin", scheduling_strategy=on_head(), **opts).remote(
        source, spawn, layout, redis_url, settings.namespace, settings.sensor_tau_s,
        Thresholds(kv_pressure_at=settings.kv_cache_pressure_at, llm_backlog_at=settings.llm_backlog_at),
    )


class ShardSpawner:
    """The coordinator's way to get a shard actor: at start the live one of that name, else a new one; after a
    failure always a new one, away from the node the failed one was placed on.

    Shards are owned by the coordinator (they die with it; a restarted coordinator spawns them again and they
    resume from their checkpoints) and Ray does not restart them itself (``max_restarts=0``): the coordinator
    notices a failed shard at the barrier and calls this again. The failed actor is killed first: a shard
    placed on a node that was dying (Ray had not noticed yet) can sit in pending creation forever, holding its
    name. Placement is decided at each call over the nodes alive then.
    """

    def __init__(self, layout: dict[str, list[str]], namespace: str, redis_url: str, sensor_tau_s: float) -> None:
        self.layout = layout
        self.namespace = namespace
        self.redis_url = redis_url
        self.sensor_tau_s = sensor_tau_s
        self.spawned: dict[str, tuple[Any, str | None]] = {}  # shard -> (handle, node asked for)

    def __call__(self, shard: str) -> RemotePort:
        import ray

        nodes = ray_nodes()
        again = shard in self.spawned
        if again:
            old, old_node = self.spawned.pop(shard)
            try:
                ray.kill(old, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            nodes = [n for n in nodes if n["node_id"] != old_node] or nodes
        node = shard_nodes(list(self.layout), nodes).get(shard)
        handle = ray.remote(TwinShard).options(
            name=f"twin-{shard}", namespace=self.namespace, get_if_exists=not again, num_cpus=SHARD_CPUS,
            max_restarts=0, scheduling_strategy=_affinity(node),
        ).remote(shard, self.layout[shard], self.sensor_tau_s, self.redis_url, self.namespace)
        self.spawned[shard] = (handle, node)
        return RemotePort(handle)


def ray_nodes() -> list[dict[str, Any]]:
    """The alive Ray nodes as ``{"node_id", "address", "head"}``, head first, then by address and id."""
    import ray

    nodes = [
        {"node_id": n["NodeID"], "address": n.get("NodeManagerAddress", ""),
         "head": bool(n.get("Resources", {}).get("node:__internal_head__"))}
        for n in ray.nodes() if n.get("Alive")
    ]
    return sorted(nodes, key=lambda n: (not n["head"], n["address"], n["node_id"]))


def shard_nodes(shards: list[str], nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Shard id → Ray node id: one shard per node in order, round-robin when there are more shards than nodes.

    Pure, so the placement rule is tested without Ray. With one node every shard lands on it.
    """
    if not nodes:
        return {}
    return {s: nodes[i % len(nodes)]["node_id"] for i, s in enumerate(shards)}


def on_head() -> Any:
    """Soft affinity to the Ray head node, where the loop's single actors live (a driver may attach to any
    raylet, and the head is the node whose loss is the cluster's anyway)."""
    heads = [n["node_id"] for n in ray_nodes() if n["head"]]
    return _affinity(heads[0] if heads else None)


def _affinity(node_id: str | None) -> Any:
    """Soft node affinity: the shard runs on its node (and reads that node's NVML); if the node is lost,
    Ray restarts it elsewhere instead of leaving the twin without the shard."""
    if node_id is None:
        return "DEFAULT"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=True)
