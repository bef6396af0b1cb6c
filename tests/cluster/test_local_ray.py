"""The local Ray cluster ``opsloop up`` starts: idle workers end at once and the GCS keeps a bounded number of task
events (Ray's default of 100k made the main job's memory creep; docs/benchmarks.md "Main job")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from cluster import deploy
from cluster.settings import Settings


class FakeRay:
    """Records what ``ray.init`` was asked for."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def init(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def _runtime(tmp_path: Path, **settings: Any) -> deploy.Runtime:
    return deploy.Runtime(settings=Settings(data_dir=tmp_path, **settings), redis_url="", url="")


def test_a_local_ray_ends_idle_workers_and_bounds_the_task_events_it_keeps(tmp_path: Path) -> None:
    rt, ray = _runtime(tmp_path), FakeRay()
    deploy._start_ray(rt, ray)
    try:
        assert ray.kwargs["address"] == "local" and ray.kwargs["include_dashboard"] is False
        assert ray.kwargs["_system_config"] == {"num_workers_soft_limit": 0,
                                                "task_events_max_num_task_in_gcs": deploy.GCS_TASK_EVENTS}
        assert 1_000 <= deploy.GCS_TASK_EVENTS < 100_000  # bounded, and still enough to debug with
    finally:
        assert rt.ray_tmp is not None
        deploy._rmtree_quiet(Path(rt.ray_tmp))


def test_a_joined_cluster_keeps_its_own_system_config(tmp_path: Path) -> None:
    rt, ray = _runtime(tmp_path, ray_address="ray://head:10001"), FakeRay()
    deploy._start_ray(rt, ray)
    assert ray.kwargs["address"] == "ray://head:10001"
    assert "_system_config" not in ray.kwargs and rt.ray_tmp is None and not rt.started_ray


@pytest.mark.ray
def test_ray_takes_the_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key Ray does not know would fail ``ray.init``; the GCS reports the values it runs with; the head starts
    without the two monitors (``deploy._without_monitors``)."""
    import ray

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)  # and put back as it was after the test
    rt = _runtime(tmp_path, ray_num_cpus=1)
    try:
        deploy._start_ray(rt, ray)
        config = ray._private.state.state.get_system_config()
        assert config["num_workers_soft_limit"] == 0
        assert config["task_events_max_num_task_in_gcs"] == deploy.GCS_TASK_EVENTS
        # Neither the autoscaler monitor nor the log monitor runs, and Ray's own start methods are back afterwards.
        from ray import ray_constants
        from ray._private.node import Node

        started = ray._private.worker._global_node.all_processes
        assert ray_constants.PROCESS_TYPE_RAYLET in started and ray_constants.PROCESS_TYPE_GCS_SERVER in started
        assert ray_constants.PROCESS_TYPE_MONITOR not in started
        assert ray_constants.PROCESS_TYPE_LOG_MONITOR not in started
        commands = " ".join(" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True))
        assert "monitor.py" not in commands and "log_monitor.py" not in commands and "raylet" in commands
        assert Node.start_monitor.__name__ == "start_monitor" and Node.start_log_monitor.__name__ == "start_log_monitor"
        # Every process Ray starts keeps glibc to two malloc arenas.
        assert ray.get(ray.remote(lambda: os.environ.get("MALLOC_ARENA_MAX")).remote()) == str(deploy.MALLOC_ARENAS)
    finally:
        ray.shutdown()
        if rt.ray_tmp:
            deploy._rmtree_quiet(Path(rt.ray_tmp))
