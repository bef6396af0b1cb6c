"""What `opsloop up` started is recorded in its data directory and does not outlive it (no Ray: a stand-in `up`
process that claims the data directory the way `up` does and starts real child processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

from cluster.cli import CliError
from cluster.cli._http import base_url, find_up, write_up_file
from cluster.lifetime import RECORD_FILE, AlreadyRunning, Lifetime, Proc, Record, is_running, reap
from cluster.redis_server import EmbeddedRedis
from cluster.settings import load_settings
from tests.helpers import wait_for

#: A stand-in for `opsloop up`: claims the data directory, starts a long sleep (in a session of its own, as Ray's
#: agents and Redis are: a signal to this process group does not reach it), records it, prints the pids, waits.
FAKE_UP = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from cluster.lifetime import Lifetime
    life = Lifetime(Path(sys.argv[1]))
    life.claim()
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    life.track()
    print(child.pid, life._reaper.pid, flush=True)
    time.sleep(300)
""")


class FakeUp:
    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FAKE_UP, str(data_dir)], stdout=subprocess.PIPE, text=True)
        child, reaper = self.proc.stdout.readline().split()  # type: ignore[union-attr]
        self.child, self.reaper = psutil.Process(int(child)), psutil.Process(int(reaper))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_up_leaves_nothing_running(tmp_path: Path) -> None:
    up = FakeUp(tmp_path)
    try:
        assert is_running(tmp_path)
        record = Record.load(tmp_path / RECORD_FILE)
        assert record is not None and record.owner.pid == up.proc.pid
        assert up.child.pid in {p.pid for p in record.processes}
        assert up.reaper.pid not in {p.pid for p in record.processes}, "the reaper is not among what it reaps"
        up.kill()
        # The reaper notices up is gone (its pipe closes) and ends what up recorded.
        wait_for(lambda: gone(up.child), timeout_s=60)
        wait_for(lambda: gone(up.reaper), timeout_s=30)
        assert not (tmp_path / RECORD_FILE).exists()
        assert not is_running(tmp_path)
    finally:
        for p in (up.child, up.reaper):
            if not gone(p):
                p.kill()


def test_the_next_up_ends_leftovers_and_only_one_up_runs(tmp_path: Path) -> None:
    up = FakeUp(tmp_path)
    try:
        with pytest.raises(AlreadyRunning, match=f"pid {up.proc.pid}"):
            Lifetime(tmp_path).claim(wait_s=0.5)
        up.reaper.kill()  # the reaper dies too (say, a kill of every process): the next up cleans up
        up.kill()
        assert not gone(up.child)
        nxt = Lifetime(tmp_path)
        ended, earlier = nxt.claim()
        try:
            assert ended == 1 and earlier is not None and earlier.owner.pid == up.proc.pid
            assert gone(up.child)
            assert is_running(tmp_path)
            mine = Record.load(tmp_path / RECORD_FILE)
            assert mine is not None and mine.owner.pid == os.getpid() and mine.processes == []
        finally:
            nxt.release()
        assert not (tmp_path / RECORD_FILE).exists() and not is_running(tmp_path)
    finally:
        if not gone(up.child):
            up.child.kill()


def test_a_reap_touches_only_what_is_provably_ours(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    precious = tmp_path / "precious"
    precious.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="opsloop-ray-", dir="/tmp"))
    try:
        real = Proc.of(bystander.pid)
        assert real is not None and real.live() is not None
        stale = Proc(bystander.pid, real.started - 1000.0, "sleep")  # same pid, another process's start time
        assert reap(Record(Proc(1, 0.0), [stale], [str(precious), str(ray_tmp)])) == 0
        assert bystander.poll() is None, "a reused pid is not ours"
        assert precious.exists(), "the record names only our own temp dirs"
        assert not ray_tmp.exists()
    finally:
        bystander.kill()
        bystander.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_redis_server_left_in_the_data_directory_is_ended(tmp_path: Path) -> None:
    # An earlier opsloop daemonized its Redis; the record does not know it, its working directory tells.
    redis_dir = tmp_path / "redis"
    leftover = EmbeddedRedis(redis_dir)
    life = Lifetime(tmp_path)
    try:
        ended, _ = life.claim(redis_dir=redis_dir)
        assert ended == 1
        assert leftover.proc.wait(10) is not None
    finally:
        life.release()
        leftover.stop()


def test_embedded_redis_appendfsync_and_dies_with_its_parent(tmp_path: Path) -> None:
    import redis

    with pytest.raises(ValueError, match="everysec, always, no"):
        EmbeddedRedis(tmp_path / "bad", appendfsync="sometimes")
    server = EmbeddedRedis(tmp_path / "r", appendfsync="always")
    try:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    finally:
        server.stop()
    code = "import sys, pathlib; from cluster.redis_server import EmbeddedRedis; " \
           "print(EmbeddedRedis(pathlib.Path(sys.argv[1])).pid, flush=True); import time; time.sleep(300)"
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))  # type: ignore[union-attr]
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: gone(child), timeout_s=30)
    finally:
        if not gone(child):
            child.kill()


def test_client_commands_find_the_running_up(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, port=18123, host="0.0.0.0")
    assert find_up(settings.state_file) is None, "no up.json: the CLI uses its settings"
    life = Lifetime(tmp_path)
    life.claim()
    try:
        write_up_file(settings, os.getpid())
        assert find_up(settings.state_file) == ("0.0.0.0", 18123)
        assert base_url("0.0.0.0", 18123) == "http://127.0.0.1:18123" and base_url("::1", 1) == "http://[::1]:1"
    finally:
        life.release()
    with pytest.raises(CliError, match=r"pid \d+, port 18123\) that is no longer running"):
        find_up(settings.state_file)
    settings.state_file.write_text("{not json")
    with pytest.raises(CliError, match="cannot read"):
        find_up(settings.state_file)
    settings.state_file.write_text(json.dumps({"url": "http://127.0.0.1:8765", "pid": 1}))  # an earlier format
    life.claim()
    try:
        assert find_up(settings.state_file) == ("127.0.0.1", 8765)
    finally:
        life.release()
