"""Call a Ray actor as if it were the local object: ``await port.method(...)``.

The shells take their neighbours as plain objects with async methods. In a test they are the real
service objects in-process; under Ray, ``RemotePort(handle)`` gives the same interface over actor calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class RemotePort:
    """Wraps a Ray ``ActorHandle`` so ``await port.f(x)`` means ``await handle.f.remote(x)``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._handle, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await method.remote(*args, **kwargs)

        return call

    def __reduce__(self) -> tuple[type, tuple[Any]]:  # picklable into other actors
        return (RemotePort, (self._handle,))
