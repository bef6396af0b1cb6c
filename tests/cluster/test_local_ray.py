"""The local Ray cluster ``opsloop up`` starts: idle workers end at once and the GCS keeps a bounded number of task
events (Ray's default of 100k made the main job's memory creep; docs/benchmarks.md "Main job")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
def test_ray_takes_the_system_config(tmp_path: Path) -> None:
    """A key Ray does not know would fail ``ray.init``; the GCS reports the values it runs with."""
    import ray

    rt = _runtime(tmp_path, ray_num_cpus=1)
    try:
        deploy._start_ray(rt, ray)
        config = ray._private.state.state.get_system_config()
        assert config["num_workers_soft_limit"] == 0
        assert config["task_events_max_num_task_in_gcs"] == deploy.GCS_TASK_EVENTS
    finally:
        ray.shutdown()
        if rt.ray_tmp:
            deploy._rmtree_quiet(Path(rt.ray_tmp))
