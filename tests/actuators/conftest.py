"""Fixtures of the actuator tests: a webhook receiver on 127.0.0.1 (``webhook_receiver.py``) and a real
single-node Slurm (``slurm_cluster.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.actuators.slurm_cluster import SlurmCluster, require_slurm
from tests.actuators.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver for one test, shut down after it."""
    with WebhookReceiver() as r:
        yield r


@pytest.fixture(scope="session")
def slurm_session() -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd started once for the session (skipped without Slurm; fails under CI=true)."""
    require_slurm()
    cluster = SlurmCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_session: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's Slurm, with no jobs and its node idle and undrained before and after the test."""
    slurm_session.reset()
    yield slurm_session
    slurm_session.reset()
