"""`--telemetry nvml` on a Ray cluster: one NVML reader actor on every GPU node, read by the twin as one source.

Each :class:`NvmlReader` lives on its node (hard node affinity: NVML only sees the GPUs of the host it runs on)
and wraps :class:`cluster.telemetry.nvml.NvmlSource`, named after the node (:func:`node_name`: the Ray node label
``opsloop.io/node`` given when the node starts, ``ray start --labels opsloop.io/node=n02``, else its host name; the
label is how several Ray nodes on one machine, which share a host name, tell themselves apart). The twin's coordinator
reads them all at once through :class:`FanIn`: a reader that fails or does not answer within the timeout is
counted by :class:`~cluster.telemetry.liveness.Liveness` and reported ``telemetry_lost`` after N misses, like a
dead exporter. A cluster without a GPU node, or a node whose driver NVML cannot load, stops ``up`` with a
sentence saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.remote import RemotePort
from cluster.telemetry.liveness import Liveness
from cluster.telemetry.samples import Sample, SourceStatus

READ_TIMEOUT_S = 5.0
#: The Ray node label that names a node for opsloop (the name its GPUs carry: ``n02/gpu3``).
NODE_LABEL = "opsloop.io/node"


class NvmlReader:
    """The actor on one GPU node (no decorator: :func:`start_readers` applies ``ray.remote``)."""

    def __init__(self, node: str) -> None:
        from cluster.telemetry.nvml import NvmlSource

        self.source = NvmlSource(node=node)  # NvmlUnavailable here fails the actor's creation, with its reason

    async def read(self) -> list[Sample]:
        return await self.source.read()


class FanIn:
    """Several readers (async ``read``) read at once as one ``TelemetrySource``, in a fixed order.

    Args:
        readers: Name → a port with async ``read()`` (a ``RemotePort`` to a reader actor).
        timeout_s: How long one reader may take.
        lost_after: Missed reads in a row after which a reader is reported lost.
        clock: Unix seconds, for the status samples.
    """

    def __init__(self, readers: dict[str, Any], timeout_s: float = READ_TIMEOUT_S, lost_after: int = 3,
                 clock: Any = None) -> None:
        import time

        self.readers = dict(sorted(readers.items()))
        self.timeout_s = timeout_s
        self.liveness = Liveness(lost_after)
        self.clock = clock or time.time
        self.errors: dict[str, str] = {}

    async def read(self) -> list[Sample]:
        names = list(self.readers)
        got = await asyncio.gather(*(asyncio.wait_for(self.readers[n].read(), self.timeout_s) for n in names),
                                   return_exceptions=True)
        out: list[Sample] = []
        ts = round(self.clock(), 3)
        for name, res in zip(names, got, strict=True):
            if isinstance(res, BaseException):
                self.errors[name] = f"{type(res).__name__}: {res}"[:500]
                missed = self.liveness.missed(name)
                if missed is not None:
                    out.append(SourceStatus(ts=ts, source="nvml", host=name, ok=False, missed=missed,
                                            error=self.errors[name]))
                continue
            self.errors.pop(name, None)
            if self.liveness.seen(name):
                out.append(SourceStatus(ts=ts, source="nvml", host=name, ok=True))
            out += res
        return out


def node_name(node: dict[str, Any]) -> str:
    """opsloop's name of a Ray node (an entry of ``ray.nodes()``): its ``opsloop.io/node`` label, else its host name."""
    labels = node.get("Labels") or {}
    return str(labels.get(NODE_LABEL) or node.get("NodeManagerHostname") or node.get("NodeManagerAddress", ""))


def gpu_nodes() -> list[dict[str, Any]]:
    """The alive Ray nodes that advertise GPUs: ``{"node_id", "host"}`` (``host``: :func:`node_name`), by name.

    Raises:
        ValueError: two GPU nodes have one name (several Ray nodes on one host, none labelled).
    """
    import ray

    nodes = [{"node_id": n["NodeID"], "host": node_name(n)}
             for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
    nodes.sort(key=lambda n: (n["host"], n["node_id"]))
    for a, b in zip(nodes, nodes[1:], strict=False):
        if a["host"] == b["host"]:
            raise ValueError(f"two GPU nodes are named {a['host']} (Ray nodes {a['node_id'][:12]}, "
                             f"{b['node_id'][:12]}): give each its own name with "
                             f"`ray start --labels {NODE_LABEL}=NAME`")
    return nodes


def start_readers(namespace: str, timeout_s: float = 60.0) -> dict[str, RemotePort]:
    """One reader on every GPU node, each checked once before the twin starts.

    Raises:
        ValueError: no GPU node, or a node where NVML does not load (the message names the node and why).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = gpu_nodes()
    if not nodes:
        raise ValueError("telemetry=nvml: no node of the Ray cluster has a GPU (Ray lists no GPU resource); "
                         "use --telemetry sim, dcgm, prometheus or replay on a cluster without GPUs")
    readers: dict[str, RemotePort] = {}
    for n in nodes:
        actor = ray.remote(NvmlReader).options(
            name=f"nvml-{n['host']}", namespace=namespace, num_cpus=0.01, get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["node_id"], soft=False),
        ).remote(n["host"])
        try:
            ray.get(actor.read.remote(), timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - the actor's creation error carries NVML's reason
            ray.kill(actor)
            raise ValueError(f"telemetry=nvml: the NVML reader on {n['host']} did not start: "
                             f"{str(exc).strip().splitlines()[-1][:300]}") from None
        readers[n["host"]] = RemotePort(actor)
    return readers
