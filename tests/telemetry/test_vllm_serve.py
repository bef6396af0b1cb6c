"""The vLLM source over real Ray Serve: every replica of the LLM app answers ``metrics_page`` through the handle's
``broadcast``, and each becomes its own sample, named by its replica.

The engine is the boundary here: each replica registers vLLM-named gauges in its process's Prometheus registry
(where vLLM registers its own) and answers as ``OpsloopLLMServer.metrics_page`` does; importing that class
brings in ``ray.serve.llm`` and torch (~0.7 GiB a process), so ``tests/serving/test_llm_serve.py`` checks the
real one, on the real engine.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
APP = "opsloop-llm-test"


def test_every_replica_is_read_as_its_own_replica() -> None:
    import ray
    from ray import serve

    from cluster.telemetry.vllm import READ, ServeReplicasReader, VllmSource

    class EngineReplica:
        """A replica with vLLM's metric names in its registry, answering as ``OpsloopLLMServer.metrics_page``."""

        def __init__(self, waiting: float) -> None:
            from prometheus_client import REGISTRY, Gauge

            gauge = Gauge("vllm:num_requests_waiting", "Requests waiting.", ["engine"], registry=REGISTRY)
            gauge.labels("0").set(waiting)

        async def metrics_page(self) -> dict[str, str]:
            from prometheus_client import REGISTRY, generate_latest

            ctx = serve.get_replica_context()
            return {"deployment": ctx.deployment, "replica": ctx.replica_tag,
                    "text": generate_latest(REGISTRY).decode()}

    tmp = tempfile.mkdtemp(prefix="ol-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=tmp, namespace="tvllm",
             log_to_driver=False)
    try:
        source = VllmSource(ServeReplicasReader(APP, timeout_s=30.0), clock=lambda: 5.0, every_s=0.0,
                            timeout_s=60.0)
        # No Serve yet: nothing read, the reason recorded (RayServeException; or, after an earlier test's Serve in
        # this process, its stale controller handle), never raised.
        assert asyncio.run(source.read()) == [] and source.errors[READ]
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        app = serve.deployment(EngineReplica, name="llm:test", num_replicas=2, ray_actor_options={"num_cpus": 0})
        serve.run(app.bind(3.0), name=APP, route_prefix=None)
        samples = asyncio.run(source.read())
        assert source.errors == {}, source.errors
        assert len(samples) == 2 and {s.deployment for s in samples} == {"llm:test"}
        assert len({s.replica for s in samples}) == 2 and all(s.waiting == 3.0 and s.ts == 5.0 for s in samples)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
