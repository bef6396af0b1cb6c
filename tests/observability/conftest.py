"""Tracing in the test process: one tracer provider for the session, spans as JSON Lines in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.tracing import setup_tracing


@pytest.fixture(scope="session")
def spans_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this process's spans go (OpenTelemetry allows one provider a process: set up once)."""
    data = tmp_path_factory.mktemp("tracing")
    setup_tracing("opsloop-test", data)
    return data / "traces"
