"""Small helpers shared by the tests that start servers and clusters."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], T], timeout_s: float = 180.0, every_s: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail the test after ``timeout_s`` (a bound, not a speed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {fn.__name__}")
