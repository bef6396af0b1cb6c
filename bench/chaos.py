"""Chaos: replay a scenario through the whole loop on Ray while killing its actors and restarting Redis.

Usage: .venv/bin/python bench/chaos.py [--scenario cooling_loss] [--kills 10] [--redis-restarts 1]
                                      [--redis-kill N] [--appendfsync everysec|always|no] [--seed 7]

Two runs of the same recorded trace on one local Ray and one private Redis server (AOF, ``--appendfsync``,
``everysec`` by default): first without faults, then with ``--kills`` kills at random moments of a random victim
(the twin's coordinator, a twin shard, the agent, the gateway; Ray restarts the actor or the coordinator spawns
the shard again), ``--redis-restarts`` graceful restarts of the Redis server (SIGTERM, then the same server on
the same files) and ``--redis-kill`` hard kills of it (SIGKILL: no shutdown, no last fsync; then the same server
on the same files). A SIGKILL ends the process, not the machine: what Redis had written to the append-only file
is in the kernel's page cache and survives; what it had acknowledged but not yet written is what ``everysec``
can lose (Redis postpones the write while a background fsync is slow) and ``always`` cannot.
A scripted operator approves every pending approval; actions go to a local webhook receiver (the data center's
boundary), which records every delivery. The runs are then compared:

- events: the twin's events from telemetry, byte for byte and in order; action events by action id;
- incidents and decisions: the agent's proposals (incident, actions) and every approval's final status;
- executed actions: the distinct action ids the receiver got (and how many deliveries were repeats, which the
  ``Idempotency-Key`` lets it drop);
- acknowledged events: every event in the log just before a Redis restart is still there after it, none is
  appended twice, and the agent's consumer group has every event delivered and acknowledged;
- acknowledged writes in flight: for a second before each Redis fault and until it, a probe thread appends to
  a stream of its own as fast as Redis answers; every write Redis acknowledged and lost is counted
  (``probe_writes``). The loop's own events are few, so this is what measures ``appendfsync``.

Recovery time per fault: from the fault until the victim is working again (twin: a new tick committed; agent:
answering and caught up with the log; gateway: answering; Redis: answering and a new tick committed).
Prints a JSON report (``--out`` writes it too); exit status 1 if the runs differ or an event was lost.
The faults, their plan and the restartable Redis server are in ``bench/chaos_faults.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_faults import REDIS_FAULTS, RedisServer, inject, plan  # noqa: E402

from actors.agent.service import AgentService  # noqa: E402
from actors.gateway.service import GatewayService  # noqa: E402
from actors.remote import RemotePort  # noqa: E402
from actors.twin.shard_service import CKPT_KIND  # noqa: E402
from actors.twin.state import unpack  # noqa: E402
from cluster.actuators.feedback import FeedbackSource, MergedSource  # noqa: E402
from cluster.actuators.webhook import WebhookActuator  # noqa: E402
from cluster.deploy import build_knowledge  # noqa: E402
from cluster.keeper import LoopKeeper  # noqa: E402
from cluster.settings import Settings  # noqa: E402
from cluster.telemetry.quality import Validator  # noqa: E402
from cluster.telemetry.replay import ReplaySource, read_batches  # noqa: E402
from cluster.twin_deploy import start_twin  # noqa: E402
from policies.policy import load_policy  # noqa: E402

SCENARIOS = ROOT / "tests" / "scenarios"
ACTION_KINDS = ("action_executed", "action_failed", "action_rejected")


def checkpoint(raw: bytes) -> dict[str, Any]:
    """The coordinator's checkpoint as data (versioned msgpack, validated; never unpickled)."""
    return unpack(raw, CKPT_KIND, "twin:ckpt")


class Receiver:
    """The data center's side of the webhook actuator: records every delivery (path = run, action id)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with lock:
                    outer.deliveries.append((self.path.strip("/"), body["action_id"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Run:
    """One run of the loop over the trace, in its own Ray namespace."""

    def __init__(self, name: str, args: argparse.Namespace, redis_url: str, receiver: Receiver) -> None:
        import ray

        self.name = name
        self.ns = f"chaos-{name}"
        self.trace = SCENARIOS / args.scenario / "trace.jsonl"
        self.ticks = sum(1 for _ in read_batches(self.trace, Validator()))
        self.redis_url = redis_url
        self.r = redis.Redis.from_url(redis_url)
        settings = Settings(namespace=self.ns, redis_url=redis_url, llm="none", sim_nodes=2, sim_gpus_per_node=4,
                            data_dir=Path(tempfile.mkdtemp(prefix="olp-chaos-")))
        source = MergedSource(ReplaySource(self.trace, realtime=True, speed=args.speed),
                              FeedbackSource(redis_url, self.ns))
        self.twin = start_twin(settings, source, redis_url, max_restarts=-1)
        opts = {"namespace": self.ns, "num_cpus": 0, "max_restarts": -1}
        self.gateway = ray.remote(GatewayService).options(name="gateway", **opts).remote(
            redis_url, self.ns, load_policy(), WebhookActuator(f"{receiver.url}/{name}", 10.0),
            fleet=RemotePort(self.twin))
        self.agent = ray.remote(AgentService).options(name="agent", **opts).remote(
            redis_url, self.ns, build_knowledge(settings), RemotePort(self.gateway), RemotePort(self.twin))
        self.handles = {"twin": self.twin, "agent": self.agent, "gateway": self.gateway}
        ray.get([self.twin.status.remote(), self.gateway.counts.remote(), self.agent.status.remote()], timeout=300)
        self.keeper = LoopKeeper(self.handles)
        self.keeper.start()
        self.stop_operator = threading.Event()
        self.operator = threading.Thread(target=self._operator, daemon=True)
        self.operator.start()

    # --- what the run has done so far (read from Redis; None while Redis is down) ---------------------------
    def tick(self) -> int | None:
        try:
            raw = self.r.get(f"{self.ns}:twin:ckpt")
        except redis.RedisError:
            return None
        return checkpoint(raw)["twin"]["tick"] if raw else 0

    def caught_up(self) -> bool:
        """The agent's group has every event delivered and acknowledged."""
        try:
            last = self.r.xinfo_stream(f"{self.ns}:events")["last-generated-id"]
            groups = self.r.xinfo_groups(f"{self.ns}:events")
        except redis.RedisError:
            return False
        return bool(groups) and groups[0]["pending"] == 0 and groups[0]["last-delivered-id"] == last

    def restarts(self, name: str) -> int:
        """How often Ray has restarted the actor (the GCS actor table), -1 while it is not alive."""
        info = ray_actors(self.handles[name]._actor_id.hex())
        return int(info.get("NumRestarts", 0)) if info and info.get("State") == "ALIVE" else -1

    def answers(self, name: str) -> bool:
        import ray

        method = {"twin": "status", "agent": "status", "gateway": "counts"}[name]
        try:
            ray.get(getattr(self.handles[name], method).remote(), timeout=5)
            return True
        except Exception:  # noqa: BLE001 - restarting
            return False

    def _operator(self) -> None:
        """Approve everything pending, as two approvers (two-person rules), retrying through restarts."""
        import ray

        while not self.stop_operator.is_set():
            try:
                for ap in ray.get(self.gateway.list.remote("pending"), timeout=10):
                    for who in ("op-a", "op-b"):
                        ray.get(self.gateway.decide.remote(ap["approval_id"], {
                            "decision": "approve", "by": who, "role": "admin", "reason": "chaos bench",
                            "channel": "http", "action_hash": ap["action_hash"]}), timeout=30)
            except Exception:  # noqa: BLE001 - the gateway or Redis may be restarting
                pass
            time.sleep(0.5)

    def done(self) -> bool:
        """The whole trace committed, the agent caught up, nothing pending or executing."""
        import ray

        raw = self.r.get(f"{self.ns}:twin:ckpt")
        if not raw or checkpoint(raw)["source"][0] < self.ticks or not self.caught_up():
            return False
        try:
            open_ = [a for a in ray.get(self.gateway.list.remote(None), timeout=10)
                     if a["status"] in ("pending", "approved", "executing")]
        except Exception:  # noqa: BLE001
            return False
        return not open_

    def stop(self) -> None:
        import ray

        self.stop_operator.set()
        self.operator.join(60)  # a thread still calling Ray after ray.shutdown() makes Ray exit the process
        self.keeper.stop()
        for h in self.handles.values():
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass

    def outcome(self, receiver: Receiver) -> dict[str, Any]:
        """What the run did, in comparable form."""
        import ray

        events = [json.loads(f[b"event"]) for _, f in self.r.xrange(f"{self.ns}:events")]
        telemetry = [json.dumps({k: v for k, v in e.items() if k != "traceparent"}, sort_keys=True)
                     for e in events if e["kind"] not in ACTION_KINDS]
        actions = sorted((e["kind"], e["data"]["action_id"]) for e in events if e["kind"] in ACTION_KINDS)
        proposals = []
        for key in self.r.scan_iter(f"{self.ns}:agent:proposal:*"):
            p = json.loads(self.r.get(key))
            proposals.append((p["incident_id"], p["proposal_id"], tuple(a["action_id"] for a in p["actions"])))
        approvals = sorted((a["action_id"], a["action"]["kind"], a["status"])
                           for a in ray.get(self.gateway.list.remote(None), timeout=30))
        got = [a for run, a in receiver.deliveries if run == self.name]
        return {
            "events": len(events), "event_ids_unique": len({e["event_id"] for e in events}) == len(events),
            "telemetry_events": telemetry, "action_events": actions, "incidents": sorted({p[0] for p in proposals}),
            "proposals": sorted(proposals), "decisions": approvals, "executed": sorted(set(got)),
            "deliveries": len(got),
        }


def run_once(name: str, args: argparse.Namespace, server: RedisServer, receiver: Receiver,
             faults: list[tuple[float, str]]) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """One run with the given faults ``(seconds after start, victim)``; returns outcome, recoveries, lost ids."""
    run = Run(name, args, server.url, receiver)
    t0 = time.monotonic()
    recoveries: list[dict[str, Any]] = []
    lost: list[str] = []
    print(f"[{name}] {run.ticks} ticks at {args.speed:g}x; {len(faults)} faults", flush=True)
    try:
        for at, victim in faults:
            while time.monotonic() - t0 < at:
                time.sleep(0.05)
            tick0 = run.tick() or 0
            restarts0 = run.restarts(victim) if victim in run.handles else 0
            fault_t = time.monotonic()
            gone, extra = inject(run, server, victim)
            lost += gone
            while not recovered(run, victim, tick0, restarts0):
                if time.monotonic() - fault_t > args.recovery_timeout:
                    raise RuntimeError(f"{victim} did not recover within {args.recovery_timeout:g} s")
                time.sleep(0.05)
            took = time.monotonic() - fault_t
            recoveries.append({"victim": victim, "at_s": round(fault_t - t0, 1), "recovery_s": round(took, 2),
                               **extra})
            print(f"[{name}] {fault_t - t0:6.1f} s  {victim:9s} recovered in {took:5.2f} s", flush=True)
        while not run.done():
            if time.monotonic() - t0 > args.timeout:
                raise RuntimeError(f"run {name} did not finish within {args.timeout:g} s")
            time.sleep(0.5)
        time.sleep(3.0)  # late feedback: an executed action's event
        print(f"[{name}] done in {time.monotonic() - t0:.1f} s", flush=True)
        return run.outcome(receiver), recoveries, lost
    finally:
        run.stop()


def ray_actors(actor_id: str) -> dict[str, Any]:
    """One actor's row of the GCS actor table (no dashboard needed)."""
    import ray

    return ray._private.state.actors(actor_id)


def recovered(run: Run, victim: str, tick0: int, restarts0: int) -> bool:
    """Back at work: a restarted actor is a new incarnation (one more restart in the GCS) that answers."""
    if victim in run.handles and run.restarts(victim) <= restarts0:
        return False
    if victim == "twin" or victim in REDIS_FAULTS or victim.startswith("twin-s"):
        tick = run.tick()
        return tick is not None and (tick > tick0 or tick >= run.ticks) and run.answers("twin")
    if victim == "agent":
        return run.answers("agent") and run.caught_up()
    return run.answers(victim)


def compare(clean: dict[str, Any], chaos: dict[str, Any]) -> dict[str, bool]:
    return {key: clean[key] == chaos[key] for key in
            ("telemetry_events", "action_events", "incidents", "proposals", "decisions", "executed")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scenario", default="cooling_loss", help="a folder of tests/scenarios (default cooling_loss)")
    ap.add_argument("--kills", type=int, default=10, help="actor kills in the faulty run (default 10)")
    ap.add_argument("--redis-restarts", type=int, default=1, help="Redis restarts in the faulty run (default 1)")
    ap.add_argument("--redis-kill", type=int, nargs="?", const=1, default=0, metavar="N",
                    help="hard kills (SIGKILL) of Redis in the faulty run (default 0; the bare flag means 1)")
    ap.add_argument("--appendfsync", choices=("everysec", "always", "no"), default="everysec",
                    help="Redis's appendfsync for both runs (default everysec, opsloop's default)")
    ap.add_argument("--speed", type=float, default=1.5, help="trace seconds per wall second (default 1.5)")
    ap.add_argument("--gap", type=float, default=6.0, help="least seconds between two faults (default 6)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the fault plan (default 7)")
    ap.add_argument("--recovery-timeout", type=float, default=180.0, help="give up on a recovery after (s)")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on a run after (s)")
    ap.add_argument("--out", type=Path, help="also write the JSON report here")
    args = ap.parse_args()
    if not (SCENARIOS / args.scenario / "trace.jsonl").exists():
        ap.error(f"no scenario {args.scenario!r}: choose from {', '.join(sorted(p.name for p in SCENARIOS.iterdir()))}")

    import ray

    work = Path(tempfile.mkdtemp(prefix="olp-chaos-", dir="/tmp"))
    server = RedisServer(work, args.appendfsync)
    receiver = Receiver()
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=str(work / "ray"), log_to_driver=False)
    try:
        ticks = sum(1 for _ in read_batches(SCENARIOS / args.scenario / "trace.jsonl", Validator()))
        faults = plan(args, ticks / args.speed)
        t0 = time.monotonic()
        clean, _, _ = run_once("clean", args, server, receiver, [])
        clean_s = time.monotonic() - t0
        t0 = time.monotonic()
        chaos, recoveries, lost = run_once("faults", args, server, receiver, faults)
        chaos_s = time.monotonic() - t0
    finally:
        ray.shutdown()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    same = compare(clean, chaos)
    times = [r["recovery_s"] for r in recoveries]
    by_victim: dict[str, list[float]] = {}
    for r in recoveries:
        by_victim.setdefault("twin shard" if r["victim"].startswith("twin-s") else r["victim"], []).append(
            r["recovery_s"])
    report = {
        "scenario": args.scenario, "speed": args.speed, "seed": args.seed, "kills": args.kills,
        "redis_restarts": args.redis_restarts, "redis_kills": args.redis_kill, "appendfsync": args.appendfsync,
        "identical": same, "lost_acknowledged_events": lost,
        "probe_writes": {"acked": sum(r.get("probe_acked", 0) for r in recoveries),
                         "lost": sum(r.get("probe_lost", 0) for r in recoveries)},
        "events": {"clean": clean["events"], "faults": chaos["events"]},
        "no_event_twice": clean["event_ids_unique"] and chaos["event_ids_unique"],
        "executed": {"clean": len(clean["executed"]), "faults": len(chaos["executed"]),
                     "deliveries_clean": clean["deliveries"], "deliveries_faults": chaos["deliveries"]},
        "incidents": len(chaos["incidents"]), "decisions": len(chaos["decisions"]),
        "recovery_s": {"p50": statistics.median(times) if times else None, "max": max(times) if times else None,
                       "by_victim": {k: {"n": len(v), "p50": statistics.median(v), "max": max(v)}
                                     for k, v in sorted(by_victim.items())}},
        "faults": recoveries, "wall_s": {"clean": round(clean_s, 1), "faults": round(chaos_s, 1)},
        "cpus": os.cpu_count(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = all(same.values()) and not lost and report["no_event_twice"]
    if not ok:
        for key, equal in same.items():
            if not equal:
                print(f"DIFFERENT {key}: clean {clean[key]!r:.300} vs faults {chaos[key]!r:.300}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
