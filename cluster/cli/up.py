"""``opsloop up``: start the whole loop on this machine (or join a Ray cluster) until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import httpx

from cluster.cli import CliError
from cluster.cli._http import auth_headers
from cluster.settings import Settings, load_settings

FOLLOW_EVERY_S = 1.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up", help="start the twin, agent, gateway and HTTP API; Ctrl-C stops everything",
        description="Start an embedded Redis (unless OPSLOOP_REDIS_URL is set), a local Ray (unless --address), "
        "the simulated fleet, the twin, the agent, the approval gateway and the HTTP API, then follow the event "
        "log and approvals in this terminal. Ctrl-C (or SIGTERM) stops everything it started; a second "
        "`opsloop up` resumes from the same data directory.",
    )
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--host", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--data-dir", help="data directory (default ./.opsloop; env OPSLOOP_DATA_DIR)")
    p.add_argument("--address", dest="ray_address", help="join this Ray cluster (auto or ray://host:port)")
    p.add_argument("--redis-url", help="use this Redis instead of the embedded one (env OPSLOOP_REDIS_URL)")
    p.add_argument("--nodes", dest="sim_nodes", type=int, help="simulated nodes (default 2)")
    p.add_argument("--gpus-per-node", dest="sim_gpus_per_node", type=int, help="simulated GPUs per node (default 8)")
    p.add_argument("--speed", dest="sim_speed", type=float, help="simulated seconds per second (default 2)")
    p.add_argument("--demo-fault", dest="demo_fault", action=argparse.BooleanOptionalAction, default=None,
                   help="inject a cooling degradation on n01 shortly after start (default: on)")
    p.add_argument("--llm", choices=("vllm", "external", "none"),
                   help="chat model: vllm (default; SmolLM2 on Ray Serve), external (an OpenAI server), none")
    p.add_argument("--model", help="model vLLM serves: a local folder or a locally cached id (default: SmolLM2)")
    p.add_argument("--openai-base-url", help="OpenAI-compatible server for --llm external (e.g. http://host:8001/v1)")
    p.add_argument("--accelerator", help="cpu (default) or a GPU type (H100, A100, L4 ...) per vLLM rank")
    p.add_argument("--tensor-parallel-size", type=int, help="GPUs per replica that split each layer (default 1)")
    p.add_argument("--replicas", dest="llm_replicas", type=int, help="vLLM replicas (default 1)")
    p.add_argument("--quiet", action="store_true", help="do not follow events and approvals in the terminal")
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = load_settings(
            port=args.port, host=args.host, data_dir=args.data_dir, ray_address=args.ray_address,
            redis_url=args.redis_url, sim_nodes=args.sim_nodes, sim_gpus_per_node=args.sim_gpus_per_node,
            sim_speed=args.sim_speed, demo_fault=args.demo_fault, llm=args.llm, model=args.model,
            openai_base_url=args.openai_base_url, accelerator=args.accelerator,
            tensor_parallel_size=args.tensor_parallel_size, llm_replicas=args.llm_replicas,
        )
    except ValidationError as exc:
        raise CliError(f"bad setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", code=2) from exc
    if settings.llm == "external" and not settings.openai_base_url:
        raise CliError("--llm external needs --openai-base-url URL (or OPSLOOP_OPENAI_BASE_URL)", code=2)
    _check_port_free(settings)
    from cluster import deploy

    stopping = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum
        raise KeyboardInterrupt

    print(f"opsloop up: data in {settings.data_dir}", flush=True)
    rt = None
    try:
        t0 = time.monotonic()
        rt = deploy.start(settings, progress=lambda line: print(line, flush=True))
        # After ray.init, which installs its own SIGTERM handler: ours must win, to stop cleanly.
        signal.signal(signal.SIGTERM, on_signal)
        settings.state_file.write_text(json.dumps({"url": rt.url, "pid": os.getpid()}))
        if not deploy.wait_healthy(rt.url):
            raise CliError(f"the HTTP API at {rt.url} did not become healthy")
        print(f"ready in {time.monotonic() - t0:.1f} s. Try: opsloop status | opsloop approvals list | "
              f"curl {rt.url}/api/approvals | OpenAI clients: base_url={rt.url}/v1 model=opsloop   "
              "(Ctrl-C stops everything)", flush=True)
        _follow(rt.url, quiet=args.quiet, headers=auth_headers(settings))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping: serve, actors, ray, redis …", flush=True)
        if rt is not None:
            deploy.stop(rt)
        settings.state_file.unlink(missing_ok=True)
        print("stopped; data kept in", settings.data_dir, flush=True)
    return 0


def _check_port_free(settings: Settings) -> None:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.host, settings.port))
        except OSError as exc:
            msg = f"{settings.host}:{settings.port} is in use ({exc.strerror}); choose another --port"
            raise CliError(msg) from exc


def _follow(url: str, quiet: bool, headers: dict[str, str] | None = None) -> None:
    """Print new events and approval changes until interrupted."""
    seen_events: set[str] = set()
    seen_states: dict[str, str] = {}
    while True:
        time.sleep(FOLLOW_EVERY_S)
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
