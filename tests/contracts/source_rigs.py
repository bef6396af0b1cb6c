"""The rig machinery of the ``TelemetrySource`` contract suite (``test_telemetry_sources.py``): a source over its
backend (:class:`Rig`), an implementation's entry in the suite (:class:`Impl`), and the rigs' helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port


async def _nothing() -> None:
    return None


@dataclass
class Rig:
    """A source over its backend, and how to give the backend something new before the next read."""

    source: Any
    feed: Callable[[], Awaitable[None]] = _nothing


Build = Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Rig]]


@dataclass(frozen=True)
class Impl:
    """One implementation: its class, its rig, and the rig with its backend unreachable (None: exempt)."""

    cls: type
    build: Build
    dead: Build | None = None
    resumable: bool = False


async def close(source: Any) -> None:
    """Close what a source opened (an HTTP client or session, a Redis connection), its parts' too."""
    for part in getattr(source, "sources", ()):
        await close(part)
    if hasattr(source, "aclose"):
        await source.aclose()
    if getattr(source, "_redis", None) is not None:
        await source._redis.aclose()


def rig(build: Callable[[pytest.FixtureRequest, Path], AsyncIterator[Rig]]) -> Build:
    """A rig's generator as a context manager that closes the source afterwards."""

    @asynccontextmanager
    async def managed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
        async with asynccontextmanager(build)(request, tmp_path) as r:
            try:
                yield r
            finally:
                await close(r.source)

    return managed


def dead_url(path: str = "") -> str:
    """An http URL on loopback that nothing listens on."""
    return f"http://127.0.0.1:{free_port()}{path}"
