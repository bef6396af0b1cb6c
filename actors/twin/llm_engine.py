"""The LLM serving facility in the twin: vLLM engine samples become per-replica rates and events.

Pure and deterministic: time comes from the samples, nothing from a clock. For each replica (its deployment
and replica name) the detector keeps the last reading and takes the interval's rates from that replica's own
counters: tokens/s, mean time to first token, preemptions. Events, each once per episode (edge-triggered; an
episode ends when its condition no longer holds):

- ``kv_cache_pressure``: KV-cache use at or above ``kv_pressure_at``, or a preemption since the replica's last
  reading (``critical`` then, else ``warning``);
- ``llm_queue_backlog``: ``backlog_at`` or more requests waiting (``warning``).

The subject is ``llm/<deployment>/<replica>``. :meth:`LlmEngineDetector.view` is the facility as the dashboard
and the chat grounding see it (the twin's snapshot, key ``llm``): totals across replicas and each replica.
A replica not read for ``forget_s`` (sample time) is forgotten (a restarted one is a new replica).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.twin.events import Event, Severity
from actors.twin.state import StateError, need, num
from cluster.telemetry.samples import LlmEngineSample

#: A replica whose last reading is this much older (sample seconds) than the newest one is forgotten.
FORGET_S = 600.0
MAX_REPLICAS = 256
#: What ``latest`` holds per replica (the rates of its last interval).
LATEST = ("ts", "kv_cache_usage", "running", "waiting", "preemptions", "tokens_per_s", "ttft_s")


@dataclass
class ReplicaState:
    """One replica: its last reading, whether an episode of each kind is open, its last interval's rates."""

    prev: LlmEngineSample
    latest: dict[str, Any]
    pressure: bool = False
    backlog: bool = False


class LlmEngineDetector:
    """Rates and edge-triggered events from successive ``LlmEngineSample`` of each replica."""

    def __init__(self, kv_pressure_at: float = 0.95, backlog_at: int = 4, forget_s: float = FORGET_S) -> None:
        self.kv_pressure_at = kv_pressure_at
        self.backlog_at = backlog_at
        self.forget_s = forget_s
        self.replicas: dict[str, ReplicaState] = {}

    def observe(self, s: LlmEngineSample) -> list[Event]:
        """Fold one replica's reading in; returns the events it raises (at most one of each kind per episode)."""
        key = f"{s.deployment}/{s.replica}"
        st = self.replicas.get(key)
        p = st.prev if st is not None else None
        dt = s.ts - p.ts if p is not None else 0.0
        preempted = max(0.0, s.preemptions_total - p.preemptions_total) if p is not None else 0.0
        tok_s = (s.generation_tokens_total - p.generation_tokens_total) / dt if p is not None and dt > 0 else 0.0
        n_ttft = s.ttft_count - p.ttft_count if p is not None else s.ttft_count
        ttft = (s.ttft_sum_s - (p.ttft_sum_s if p is not None else 0.0)) / n_ttft if n_ttft > 0 else None
        latest = {
            "ts": s.ts, "kv_cache_usage": round(s.kv_cache_usage, 4), "running": int(s.running),
            "waiting": int(s.waiting), "preemptions": int(preempted), "tokens_per_s": round(max(tok_s, 0.0), 2),
            "ttft_s": round(ttft, 4) if ttft is not None else None,
        }
        if st is None:
            st = self.replicas[key] = ReplicaState(s, latest)
        st.prev, st.latest = s, latest
        subject, names = f"llm/{key}", {"deployment": s.deployment, "replica": s.replica}
        events: list[Event] = []
        pressure = s.kv_cache_usage >= self.kv_pressure_at or preempted > 0
        if pressure and not st.pressure:
            sev: Severity = "critical" if preempted > 0 else "warning"
            events.append(Event.make("kv_cache_pressure", subject, s.ts, sev, {
                **names, "kv_cache_usage": s.kv_cache_usage, "preemptions": int(preempted),
                "running": int(s.running), "waiting": int(s.waiting)}))
        st.pressure = pressure
        backlog = s.waiting >= self.backlog_at
        if backlog and not st.backlog:
            events.append(Event.make("llm_queue_backlog", subject, s.ts, "warning", {
                **names, "waiting": int(s.waiting), "running": int(s.running), "ttft_s": latest["ttft_s"],
                "tokens_per_s": latest["tokens_per_s"]}))
        st.backlog = backlog
        self._forget(s.ts)
        return events

    def _forget(self, now: float) -> None:
        """Drop replicas not read for ``forget_s``, and the stalest beyond ``MAX_REPLICAS`` (deterministic)."""
        for key in [k for k, st in self.replicas.items() if now - st.prev.ts > self.forget_s]:
            del self.replicas[key]
        if len(self.replicas) > MAX_REPLICAS:
            stalest = sorted(self.replicas, key=lambda k: (self.replicas[k].prev.ts, k))
            for key in stalest[:len(self.replicas) - MAX_REPLICAS]:
                del self.replicas[key]

    def view(self) -> dict[str, Any] | None:
        """The serving facility now: KV cache of the fullest replica, the worst TTFT, the rest summed across
        replicas, and each replica's last interval (``replicas``); None before any reading."""
        if not self.replicas:
            return None
        reps = [{"deployment": st.prev.deployment, "replica": st.prev.replica, **st.latest}
                for _, st in sorted(self.replicas.items())]
        ttfts = [r["ttft_s"] for r in reps if r["ttft_s"] is not None]
        return {
            "ts": max(r["ts"] for r in reps),
            "kv_cache_usage": max(r["kv_cache_usage"] for r in reps),
            "running": sum(r["running"] for r in reps),
            "waiting": sum(r["waiting"] for r in reps),
            "preemptions": sum(r["preemptions"] for r in reps),
            "tokens_per_s": round(sum(r["tokens_per_s"] for r in reps), 2),
            "ttft_s": max(ttfts) if ttfts else None,
            "replicas": reps,
        }

    # --- state as data (the twin's checkpoint: see actors.twin.state) ----------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Every replica's last reading, open episodes and rates: ``from_state`` goes on identically."""
        return {"forget_s": self.forget_s, "replicas": {
            k: {"prev": st.prev.model_dump(mode="json"), "latest": dict(st.latest), "pressure": st.pressure,
                "backlog": st.backlog} for k, st in self.replicas.items()}}

    @classmethod
    def from_state(cls, d: Any, kv_pressure_at: float = 0.95, backlog_at: int = 4) -> LlmEngineDetector:
        """Rebuild from ``to_state`` (thresholds are the model's); raises ``StateError`` (or a ``ValueError``)."""
        d = need(d, dict, "llm engine state")
        det = cls(kv_pressure_at, backlog_at, num(d["forget_s"], "llm forget_s"))
        for key, r in need(d["replicas"], dict, "llm replicas").items():
            r = need(r, dict, "llm replica")
            prev = LlmEngineSample.model_validate(need(r["prev"], dict, "llm reading"))
            if need(key, str, "llm replica") != f"{prev.deployment}/{prev.replica}":
                raise StateError(f"llm replica {key!r} holds a reading of {prev.deployment}/{prev.replica}")
            latest = need(r["latest"], dict, "llm rates")
            if set(latest) != set(LATEST):
                raise StateError(f"llm rates of {key}: keys {sorted(latest)}, expected {sorted(LATEST)}")
            for k, v in latest.items():
                if v is not None:
                    num(v, f"llm rate {k}")
            det.replicas[key] = ReplicaState(prev, latest, need(r["pressure"], bool, "llm pressure"),
                                             need(r["backlog"], bool, "llm backlog"))
        return det
