"""What ``opsloop up`` started, kept in its data directory, so that nothing it started outlives it.

- ``<data dir>/up.lock``: ``up`` holds an exclusive ``flock`` on it for its whole life. The kernel drops the lock
  when ``up`` dies, however it dies, so "is an ``up`` running on this data directory?" has an exact answer (no pid
  that may have been reused meanwhile).
- ``<data dir>/up.pids.json``: every process ``up`` started (pid *and* start time, so a reused pid is never taken
  for ours) and the temp directories it made; written as things start, refreshed while ``up`` runs, removed on a
  clean stop.
- The reaper: a small process in a session of its own (a signal to ``up``'s process group does not reach it) that
  reads a pipe from ``up`` until it closes. If the record is still there then, ``up`` did not stop cleanly
  (SIGKILL, the OOM killer, a crash) and the reaper ends what the record lists: Ray's agents, for one, outlive a
  killed ``up`` by minutes otherwise. The next ``up`` on the data directory does the same for whatever is still
  left, and also ends a Redis server still serving this data directory (an older opsloop daemonized it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOCK_FILE = "up.lock"
RECORD_FILE = "up.pids.json"
#: SIGTERM first (Redis saves, Ray's processes shut down), SIGKILL for what is still there after this.
GRACE_S = 5.0
#: How long a new ``up`` waits for the lock: a reaper may still be cleaning up after a killed ``up``.
CLAIM_WAIT_S = 15.0
#: Names of the temp dirs (under /tmp) that ``up`` makes and a reap removes.
TEMP_PREFIXES = ("opsloop-ray-", "opsloop-redis-")


class AlreadyRunning(RuntimeError):
    """Another ``opsloop up`` holds this data directory."""


@dataclass(frozen=True)
class Proc:
    """A process as recorded: its pid and its start time (seconds since the epoch, as psutil reports it)."""

    pid: int
    started: float
    name: str = ""

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        import psutil

        try:
            p = psutil.Process(pid)
            return cls(pid, p.create_time(), p.name())
        except psutil.Error:
            return None

    def live(self) -> Any:
        """The ``psutil.Process`` if this very process still runs (not a zombie, not a reused pid), else None."""
        import psutil

        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.started) > 0.05 or p.status() == psutil.STATUS_ZOMBIE:
                return None
            if p.uids().real != os.getuid():  # ours run as we do
                return None
            return p
        except psutil.Error:
            return None


@dataclass
class Record:
    """The contents of ``up.pids.json``."""

    owner: Proc
    processes: list[Proc] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            raw = json.loads(path.read_text())
            return cls(Proc(**raw["owner"]), [Proc(**p) for p in raw["processes"]], [str(d) for d in raw["dirs"]])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # torn or foreign: nothing in it can be proven ours


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Keep a SIGTERM handler the caller installed across the block: ``ray.init`` replaces it with ``sys.exit``,
    and ``opsloop up`` must stop what it started (Serve, actors, Ray, Redis, in that order) on SIGTERM."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and callable(before):
            signal.signal(signal.SIGTERM, before)


def is_running(data_dir: Path) -> bool:
    """True while an ``opsloop up`` holds ``data_dir`` (its lock is taken)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def end_processes(procs: list[Any], grace_s: float = GRACE_S) -> int:
    """SIGTERM each ``psutil.Process``, SIGKILL those still there after ``grace_s``; returns how many were ended."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=2)
    return len(procs)


def reap(record: Record, also_redis_in: Path | None = None) -> int:
    """End what ``record`` lists that still runs (and a redis-server working in ``also_redis_in``); remove its dirs."""
    me = os.getpid()
    procs = [p for p in (proc.live() for proc in record.processes if proc.pid != me) if p is not None]
    if also_redis_in is not None:
        procs += [p for p in _redis_servers_in(also_redis_in) if p.pid not in {q.pid for q in procs}]
    ended = end_processes(procs) if procs else 0
    for d in record.dirs:
        if _temp_dir_of_ours(Path(d)):  # the record is a file: never let it name any other directory
            shutil.rmtree(d, ignore_errors=True)
    return ended


def _temp_dir_of_ours(path: Path) -> bool:
    """One of the temp dirs ``up`` makes: Ray's (``/tmp/opsloop-ray-*``) or the Redis socket's."""
    return path.parent == Path("/tmp") and path.name.startswith(TEMP_PREFIXES) and not path.is_symlink()


def _redis_servers_in(directory: Path) -> list[Any]:
    """redis-server processes whose working directory is ``directory`` (Redis works in its ``dir``)."""
    import psutil

    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "redis-server" and Path(p.cwd()) == directory.resolve():
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


class Lifetime:
    """The data directory's record of one running ``opsloop up``: lock, processes, reaper.

    Args:
        data_dir: The ``up``'s data directory.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lock_path = data_dir / LOCK_FILE
        self.record_path = data_dir / RECORD_FILE
        self._lock_fd: int | None = None
        self._pipe: int | None = None
        self._reaper: subprocess.Popen | None = None
        self.record: Record | None = None

    def claim(self, redis_dir: Path | None = None, wait_s: float = CLAIM_WAIT_S) -> tuple[int, Record | None]:
        """Take the data directory, end what an earlier ``up`` left running there, start the reaper.

        Args:
            redis_dir: Where the embedded Redis works: a redis-server still serving it is ended too.
            wait_s: How long to wait for the lock (a reaper may still be cleaning up).

        Returns:
            How many leftover processes were ended, and the earlier run's record (None: there was none).

        Raises:
            AlreadyRunning: another ``up`` holds the data directory.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                earlier = Record.load(self.record_path)
                # Held by a live up: say so at once. Else a reaper is cleaning up after a killed one: wait for it.
                if time.monotonic() > deadline or (earlier is not None and earlier.owner.live() is not None):
                    os.close(fd)
                    who = f" (pid {earlier.owner.pid})" if earlier else ""
                    raise AlreadyRunning(f"another opsloop up{who} is running on {self.data_dir}; stop it first, "
                                         "or use another --data-dir") from None
                time.sleep(0.2)
        self._lock_fd = fd
        earlier = Record.load(self.record_path)
        ended = reap(earlier or Record(Proc(0, 0.0)), also_redis_in=redis_dir)
        me = Proc.of(os.getpid())
        assert me is not None
        self.record = Record(me)
        self._write()
        self._start_reaper()
        return ended, earlier

    def track(self, *dirs: str | os.PathLike[str]) -> None:
        """Record the temp dirs given and every process now below this one (``up``); rewrite only on change."""
        import psutil

        if self.record is None:
            return
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        reaper = self._reaper.pid if self._reaper is not None else None
        now = {p for p in (Proc.of(c.pid) for c in children if c.pid != reaper) if p is not None}
        # Keep what was recorded and still runs (a reparented Ray agent, say), add what is new.
        kept = {p for p in self.record.processes if p.live() is not None}
        procs = sorted(kept | now, key=lambda p: p.pid)
        new_dirs = [str(d) for d in dirs if str(d) not in self.record.dirs]
        if procs != self.record.processes or new_dirs:
            self.record.processes = procs
            self.record.dirs += new_dirs
            self._write()

    def release(self) -> None:
        """A clean stop: forget the record (the reaper then has nothing to do), let the reaper go, unlock."""
        if self.record is not None:  # ours only once claimed: never remove another up's record
            self.record_path.unlink(missing_ok=True)
            self.record = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self._reaper is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(5)  # it finds no record and exits at once
            self._reaper = None

    def _write(self) -> None:
        assert self.record is not None
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(self.record.to_json())
        os.replace(tmp, self.record_path)

    def _start_reaper(self) -> None:
        read_end, self._pipe = os.pipe()
        assert self.record is not None
        owner = self.record.owner
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "cluster.lifetime", str(self.data_dir), str(owner.pid), repr(owner.started)],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        os.close(read_end)


def _reaper_main(data_dir: Path, owner: Proc) -> int:
    """Wait until the ``up`` that started us closes the pipe; if it left its record, end what the record lists."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass
    # up is gone, or released, which removed the record first. Take the lock so that a new up waits for us.
    if not (data_dir / RECORD_FILE).exists():
        return 0
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return 0  # a new up holds the data directory: it has cleaned up already
                time.sleep(0.2)
        record = Record.load(data_dir / RECORD_FILE)
        if record is None or (record.owner.pid, record.owner.started) != (owner.pid, owner.started):
            return 0
        reap(record)
        (data_dir / RECORD_FILE).unlink(missing_ok=True)
        return 0
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(_reaper_main(Path(sys.argv[1]), Proc(int(sys.argv[2]), float(sys.argv[3]))))
