"""`opsloop up` started in the background as a script or a supervisor does (`setsid opsloop up &`): SIGINT or SIGTERM
to its own process stops everything it started within 30 s, without a traceback; after SIGKILL nothing it started
lives on for long, and the next `up` on the same data directory starts clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

#: The issue's bound, from the signal to the last process of the tree gone.
STOP_BOUND_S = 30.0
#: After SIGKILL: the kernel's parent-death signal and the reaper (SIGTERM, then SIGKILL after 5 s) end the rest.
KILL_BOUND_S = 60.0


def opsloop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


class BackgroundUp:
    """`setsid opsloop up … &` from a non-interactive shell: a session of its own, SIGINT ignored on entry."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.log = data_dir.parent / f"up-{time.monotonic_ns()}.log"
        self.proc = background([sys.executable, "-m", "cluster", "up", "--data-dir", str(data_dir), "--port",
                                str(port), "--llm", "none", "--quiet", "--no-demo-fault"], self.log)
        self.tree: dict[int, psutil.Process] = {}
        self.names: dict[int, str] = {}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remember_tree(self) -> None:
        try:
            children = self.proc.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in children:
            if p.pid not in self.tree:
                try:
                    self.names[p.pid] = p.name()
                    self.tree[p.pid] = p
                except psutil.NoSuchProcess:
                    pass  # a short-lived helper of Ray's, gone already

    def wait_healthy(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.is_running(), self.output()[-3000:]
            self.remember_tree()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200 and \
                        (self.data_dir / "up.json").exists():
                    self.remember_tree()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("up did not become healthy\n" + self.output()[-3000:])

    def signal(self, sig: int) -> float:
        """Send ``sig`` to up's own process; returns when that was (monotonic)."""
        self.remember_tree()
        assert len(self.tree) >= 5, f"up started Redis and Ray: {self.tree}"
        self.proc.send_signal(sig)
        return time.monotonic()

    def alive(self) -> list[str]:
        out = []
        for p in [self.proc, *self.tree.values()]:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running checks the start time too
                    out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        return out

    def wait_all_gone(self, since: float, bound_s: float) -> float:
        """Seconds from ``since`` until up and every process of its tree were gone; fails past ``bound_s``."""
        while self.alive():
            if time.monotonic() - since > bound_s:
                raise AssertionError(f"still running {bound_s:.0f} s after the signal: {self.alive()}\n"
                                     + self.output()[-2000:])
            time.sleep(0.2)
        return time.monotonic() - since

    def kill_all(self) -> None:
        for p in [self.proc, *self.tree.values()]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def background(cmd: list[str], log: Path) -> psutil.Process:
    """``setsid CMD >LOG 2>&1 &`` run by ``sh -c``; the process started (not our child: the shell is gone)."""
    out = subprocess.run(["sh", "-c", 'setsid "$@" >"$LOG" 2>&1 & echo $!', "sh", *cmd], capture_output=True,
                         text=True, timeout=30, check=True, env={**os.environ, "LOG": str(log)})
    return psutil.Process(int(out.stdout))


def test_a_background_job_starts_with_sigint_ignored(tmp_path: Path) -> None:
    """The condition `up` must cope with (POSIX: a shell without job control ignores SIGINT in `&` jobs)."""
    log = tmp_path / "probe.log"
    probe = background([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"], log)
    probe.wait(30)
    assert log.read_text().strip() == str(signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_a_background_up_stops_everything(tmp_path: Path, sig: int) -> None:
    data = tmp_path / "data"
    up = BackgroundUp(data, free_port())
    try:
        up.wait_healthy()
        up.wait_all_gone(up.signal(sig), STOP_BOUND_S)
        out = up.output()
        assert "stopped; data kept in" in out and "Traceback" not in out, out[-3000:]
        assert not (data / "up.json").exists() and not (data / "up.pids.json").exists()
    finally:
        up.kill_all()


def test_after_sigkill_nothing_lives_on_and_the_next_up_starts_clean(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    up = BackgroundUp(data, port)
    nxt = None
    try:
        up.wait_healthy()
        redis = [up.tree[pid] for pid, name in up.names.items() if name == "redis-server"]
        assert len(redis) == 1, up.tree
        up.wait_all_gone(up.signal(signal.SIGKILL), KILL_BOUND_S)
        assert not redis[0].is_running(), "the embedded Redis followed up"

        stale = opsloop("status", "--data-dir", str(data), cwd=tmp_path)
        assert stale.returncode == 1 and "no longer running" in stale.stderr, stale.stderr

        nxt = BackgroundUp(data, port)  # same data directory, same port
        nxt.wait_healthy()
        st = opsloop("status", "--json", "--data-dir", str(data), cwd=tmp_path)  # no --port: found through up.json
        assert st.returncode == 0 and '"twin"' in st.stdout, st.stderr
        assert "Traceback" not in nxt.output()
        nxt.wait_all_gone(nxt.signal(signal.SIGTERM), STOP_BOUND_S)
        assert "Traceback" not in nxt.output(), nxt.output()[-3000:]
    finally:
        up.kill_all()
        if nxt is not None:
            nxt.kill_all()
