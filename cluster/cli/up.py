"""``opsloop up``: start the whole loop on this machine (or join a Ray cluster) until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from cluster.cli import CliError
from cluster.cli._flags import add_settings_flags, settings_from_args
from cluster.cli._http import auth_headers, write_up_file
from cluster.lifetime import AlreadyRunning, Lifetime
from cluster.settings import Settings

FOLLOW_EVERY_S = 1.0
#: How often the record of what ``up`` started (``<data dir>/up.pids.json``) is brought up to date.
TRACK_EVERY_S = 5.0


class StopSignals:
    """SIGINT and SIGTERM to this process stop ``up``: the first raises ``KeyboardInterrupt`` in the main thread.

    Installed explicitly for SIGINT too: a job started in the background by a non-interactive shell
    (``setsid opsloop up &`` in a script or supervisor) begins with SIGINT *ignored*, and Python then keeps it
    ignored, so ``kill -INT`` did nothing. Later signals only note that a stop is under way: a second Ctrl-C must
    not cut the clean-up short.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.cleaning = False

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        first = self.received is None
        self.received = self.received or signum
        if first and not self.cleaning:
            raise KeyboardInterrupt
        # os.write, not print: a handler that prints while the main thread is printing raises a reentrant-call error
        with contextlib.suppress(OSError):
            os.write(sys.stdout.fileno(), f"({signal.Signals(signum).name}: already stopping)\n".encode())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up", help="start the twin, agent, gateway and HTTP API; Ctrl-C (SIGINT) or SIGTERM stops everything",
        description="Start an embedded Redis (unless OPSLOOP_REDIS_URL is set), a local Ray (unless --address), "
        "the fleet's telemetry (the simulator unless --telemetry says otherwise), the twin, the agent, the approval "
        "gateway and the HTTP API, then follow the event "
        "log and approvals in this terminal. Ctrl-C, or SIGINT or SIGTERM sent to this process (kill -INT PID), "
        "stops everything it started within seconds. If `up` is killed outright (SIGKILL), what it started "
        "follows it, and the next `opsloop up` on the same data directory ends anything left over. Only one "
        "`up` runs per data directory; it records its address there (up.json), so client commands run with the "
        "same data directory need no --port. A second `opsloop up` resumes from the same data.",
    )
    add_settings_flags(
        p,
        port="HTTP port (default 8000)",
        host="HTTP address (default 127.0.0.1)",
        data_dir="data directory (default ./.opsloop; env OPSLOOP_DATA_DIR)",
        ray_address="join this Ray cluster (auto or ray://host:port)",
        redis_url="use this Redis instead of the embedded one (env OPSLOOP_REDIS_URL)",
        redis_appendfsync="when the embedded Redis fsyncs its append-only file: everysec (default; a machine crash "
        "can lose about a second of acknowledged writes), always (none lost; slower), no (the OS decides); env "
        "OPSLOOP_REDIS_APPENDFSYNC",
        sim_nodes="simulated nodes (default 2)",
        sim_gpus_per_node="simulated GPUs per node (default 8)",
        sim_speed="simulated (or, with --telemetry replay, replayed) seconds per second (default 2)",
        telemetry="where the fleet's telemetry comes from: sim (default, the built-in simulator), dcgm (scrape "
        "dcgm-exporters, --dcgm-url), prometheus (their series in Prometheus, --prometheus-url), nvml (a reader on "
        "every GPU node of the Ray cluster) or replay (--replay FILE)",
        dcgm_urls="a dcgm-exporter /metrics URL; repeat once per host (e.g. http://dgx-01:9400/metrics)",
        prometheus_url="Prometheus server that scrapes the dcgm-exporters (e.g. http://prometheus:9090)",
        replay_file="JSON Lines trace to replay at --speed",
        redfish_urls="a Redfish service root of a BMC or CDU (leaks, cooling units, fans); NAME=URL names it as the "
        "GPU telemetry names its host, or as the cooling unit a CDU is; repeatable",
        scrape_interval_s="seconds between two scrapes of a live source (default 5)",
        facility="the cooling plant: none (default), modbus (setpoints and fan speeds over Modbus TCP, read back "
        "as telemetry; --modbus-endpoint, --modbus-map) or redfish (setpoints and pump speeds as PATCHes of the "
        "CDUs' CoolingUnit resources; --redfish-url NAME=URL)",
        modbus_endpoint="Modbus TCP server of the cooling units (HOST[:PORT], port 502 by default)",
        modbus_map="YAML/JSON file of the units' Modbus registers (see `opsloop config show`)",
        actuator="where approved actions run (default: sim with the simulator, else dry-run)",
        scheduler=None, slurm_conf=None, k8s_kubeconfig=None, tickets=None, paging=None,  # help: _flags.FLAGS
        demo_fault="inject a cooling degradation on n01 shortly after start (default: on)",
        llm="chat model: vllm (default; SmolLM2 on Ray Serve), external (an OpenAI server), none",
        model="model vLLM serves: a local folder or a locally cached id (default: SmolLM2)",
        openai_base_url="OpenAI-compatible server for --llm external (e.g. http://host:8001/v1)",
        accelerator="cpu (default) or a GPU type (H100, A100, L4 ...) per vLLM rank",
        tensor_parallel_size="GPUs per replica that split each layer (default 1)",
        llm_replicas="vLLM replicas (default 1)",
    )
    p.add_argument("--quiet", action="store_true", help="do not follow events and approvals in the terminal")
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.llm == "external" and not settings.openai_base_url:
        raise CliError("--llm external needs --openai-base-url URL (or OPSLOOP_OPENAI_BASE_URL)", code=2)
    signals = StopSignals()
    signals.install()  # before anything starts: a signal during start stops what has started so far
    life = Lifetime(settings.data_dir)
    try:
        ended, earlier = life.claim(redis_dir=None if settings.redis_url else settings.redis_dir)
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        life.release()
        return 0
    rt = None
    try:
        print(f"opsloop up: data in {settings.data_dir}", flush=True)
        if ended:
            print(f"ended {ended} process(es) left running by an earlier opsloop up"
                  + (f" (pid {earlier.owner.pid})" if earlier else ""), flush=True)
        settings.state_file.unlink(missing_ok=True)  # a stale one, from an up that did not stop cleanly
        _check_port_free(settings)  # after the clean-up: a leftover could hold the port
        from cluster import deploy

        t0 = time.monotonic()
        rt = deploy.start(settings, progress=lambda line: print(line, flush=True),
                          started=lambda r: life.track(*_temp_dirs(r)))
        if signals.received is None:
            if not deploy.wait_healthy(rt.url):
                raise CliError(f"the HTTP API at {rt.url} did not become healthy")
            write_up_file(settings, os.getpid())
            print(f"ready in {time.monotonic() - t0:.1f} s. Try: opsloop status | opsloop approvals list | "
                  f"curl {rt.url}/api/approvals | OpenAI clients: base_url={rt.url}/v1 model=opsloop   "
                  "(Ctrl-C stops everything)", flush=True)
            _follow(rt.url, quiet=args.quiet, headers=auth_headers(settings),
                    until=lambda: signals.received is not None, track=lambda: life.track(*_temp_dirs(rt)))
    except KeyboardInterrupt:
        pass
    finally:
        signals.cleaning = True
        print("\nstopping: serve, actors, ray, redis …", flush=True)
        settings.state_file.unlink(missing_ok=True)  # clients: nothing to reach any more
        if rt is not None:
            deploy.stop(rt)
        life.release()
        print("stopped; data kept in", settings.data_dir, flush=True)
    return 0


def _temp_dirs(rt: Any) -> list[str]:
    """Temp directories the runtime made (Ray's, the Redis socket's), for the record of what ``up`` started."""
    dirs = [rt.ray_tmp] if rt.ray_tmp else []
    if rt.redis is not None:
        dirs.append(str(rt.redis.socket_dir))
    return dirs


def _check_port_free(settings: Settings) -> None:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.host, settings.port))
        except OSError as exc:
            msg = f"{settings.host}:{settings.port} is in use ({exc.strerror}); choose another --port"
            raise CliError(msg) from exc


def _follow(url: str, quiet: bool, headers: dict[str, str] | None = None, until: Callable[[], bool] = lambda: False,
            track: Callable[[], None] = lambda: None) -> None:
    """Print new events and approval changes until interrupted (or ``until()``); ``track()`` every few seconds."""
    seen_events: set[str] = set()
    seen_states: dict[str, str] = {}
    tracked = time.monotonic()
    while not until():
        time.sleep(FOLLOW_EVERY_S)
        if time.monotonic() - tracked >= TRACK_EVERY_S:
            track()
            tracked = time.monotonic()
        if quiet:
            continue
        try:
            events = httpx.get(f"{url}/api/events", params={"limit": 200}, headers=headers, timeout=10).json()
            approvals = httpx.get(f"{url}/api/approvals", headers=headers, timeout=10).json()
        except (httpx.HTTPError, ValueError):
            continue
        for ev in events:
            if ev["event_id"] not in seen_events:
                seen_events.add(ev["event_id"])
                print(f"[t={ev['ts']:7.1f}s] {ev['severity']:<8} {ev['kind']:<27} {ev['subject']}", flush=True)
        for ap in approvals:
            if seen_states.get(ap["approval_id"]) != ap["status"]:
                seen_states[ap["approval_id"]] = ap["status"]
                hint = f"   -> opsloop approvals approve {ap['approval_id']}" if ap["status"] == "pending" else ""
                detail = (ap.get("result") or {}).get("detail", "")
                print(f"approval {ap['approval_id']} {ap['status']:<9} {ap['summary']}"
                      + (f" — {detail}" if detail else "") + hint, flush=True)
        sys.stdout.flush()
