"""Small helpers shared by the tests that start servers and clusters."""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self, TypeVar

T = TypeVar("T")


#: Ports the tests hand out: above Ray's worker ports (10002–19999 by default) and below the kernel's ephemeral
#: range, from which every outgoing connection and every ``bind(0)`` (Ray's GCS, raylet and agents included) draws.
_TEST_PORTS = (20000, 32767)
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now and that nothing else will take before the test binds it.

    A port the kernel picks (``bind(0)``) is in its ephemeral range, where it may hand the same port to an outgoing
    connection or to Ray's own servers in the seconds before the test's server binds it (seen: Serve's proxy failed
    to bind such a port while ``opsloop up`` was starting Ray). So the port comes from below that range, and each
    is handed out once per test process."""
    lo, hi = _TEST_PORTS[0], min(_TEST_PORTS[1], _ephemeral_low() - 1)
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(lo, hi) if hi > lo else 0
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in {lo}-{hi}")


def wait_for(fn: Callable[[], T], timeout_s: float = 180.0, every_s: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail the test after ``timeout_s`` (a bound, not a speed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {fn.__name__}")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing: the test's own output stays readable."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


class LocalHTTPServer:
    """A test's HTTP server: ``handler`` answers on 127.0.0.1 (a port the kernel picks, bound at once) in a daemon
    thread until :meth:`close` or the end of its ``with``. ``url`` is its origin (``https`` with ``tls``, the server
    side of a test CA); ``poll_s`` is how often the thread checks for :meth:`close`.

    The fakes of a service (Redfish, Jira, the Kubernetes API, a webhook receiver) subclass it: they hold their state
    and give it a handler that reads it."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None,
                 poll_s: float = 0.5) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(poll_s,), daemon=True).start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
