"""The recorded LLM-serving trace of ``tests/twin/data/llm_engine_trace.jsonl`` and how it was recorded.

Two vLLM replicas' ``/metrics`` pages, written by ``prometheus_client`` under vLLM's metric names (replica
``r2`` runs two engines, label ``engine``), are read by the real :class:`~cluster.telemetry.vllm.VllmSource`
every 5 s of fleet time, beside two GPUs' readings; the samples are written as JSON Lines, the replay format.
Replica ``r1`` fills its KV cache (one ``kv_cache_pressure`` episode), recovers, then preempts (a second,
critical one); ``r2`` builds a queue (``llm_queue_backlog``).

``python -m tests.twin.llm_trace`` writes the trace again (``test_llm_engine_replay`` checks it is unchanged).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cluster.telemetry.samples import GpuSample, Sample
from cluster.telemetry.vllm import MetricsPage, VllmSource

DATA = Path(__file__).parent / "data"
TRACE = DATA / "llm_engine_trace.jsonl"
EVENTS = DATA / "llm_engine_events.jsonl"
DEPLOYMENT = "llm:smollm2-135m-instruct"
STEP_S, STEPS = 5.0, 36
LABELS = ("engine", "model_name")
MODEL = "smollm2-135m-instruct"


class Replica:
    """One vLLM replica's metrics registry (names and types as vLLM exports them), engines told apart by label."""

    def __init__(self) -> None:
        r, lab = CollectorRegistry(), LABELS
        self.registry = r
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, registry=r)
        self.running = Gauge("vllm:num_requests_running", "Requests in model execution batches.", lab, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be processed.", lab, registry=r)
        self.preempt = Counter("vllm:num_preemptions", "Cumulative preemptions.", lab, registry=r)
        self.gen = Counter("vllm:generation_tokens", "Generation tokens processed.", lab, registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed.", lab, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", lab, registry=r,
                              buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

    def tick(self, engine: str, kv: float, running: int, waiting: int, tokens: int, preempted: int,
             ttfts: list[float]) -> None:
        """One step of one engine: gauges set, counters advanced."""
        lab = (engine, MODEL)
        self.kv.labels(*lab).set(kv)
        self.running.labels(*lab).set(running)
        self.waiting.labels(*lab).set(waiting)
        self.gen.labels(*lab).inc(tokens)
        self.prompt.labels(*lab).inc(tokens * 3)
        self.preempt.labels(*lab).inc(preempted)
        for t in ttfts:
            self.ttft.labels(*lab).observe(t)

    def page(self) -> str:
        """The ``/metrics`` page, without the ``_created`` series (wall-clock times, not a field we read)."""
        lines = generate_latest(self.registry).decode().splitlines()
        return "\n".join(line for line in lines if "_created" not in line) + "\n"


class TraceReader:
    """The replicas as a ``MetricsReader``: each read advances them one step of the scenario."""

    def __init__(self) -> None:
        self.r1, self.r2 = Replica(), Replica()
        self.k = 0

    async def read(self) -> list[MetricsPage]:
        k = self.k = self.k + 1
        kv1 = 0.97 if 8 <= k <= 11 else min(0.4 + 0.05 * k, 0.9) if k < 8 else 0.6
        self.r1.tick("0", kv1, 6, 1 if kv1 < 0.95 else 3, 180 + 7 * k, 2 if k == 24 else 0, [0.08 + 0.01 * (k % 3)] * 3)
        queue = 6 if 14 <= k <= 18 else 1
        self.r2.tick("0", 0.5, 4, queue, 120, 0, [0.3, 0.4])
        self.r2.tick("1", 0.55, 4, queue // 2, 90, 0, [0.2])
        return [MetricsPage(DEPLOYMENT, "r2", self.r2.page()), MetricsPage(DEPLOYMENT, "r1", self.r1.page())]


async def record_samples() -> list[Sample]:
    """The trace's samples: at every instant two GPUs, then what the vLLM source read at that instant."""
    now = [0.0]
    source = VllmSource(TraceReader(), clock=lambda: now[0], every_s=0.0)
    out: list[Sample] = []
    for k in range(1, STEPS + 1):
        now[0] = k * STEP_S
        out += [GpuSample(ts=now[0], node=n, gpu=0, temp_c=60.0 + (k % 4) * 0.25, power_w=500.0, sm_clock_mhz=1980.0)
                for n in ("n01", "n02")]
        out += await source.read()
    assert not source.errors and not source.quarantined, (source.errors, source.quarantined)
    return out


def record() -> str:
    """The trace as JSON Lines."""
    return "".join(s.model_dump_json() + "\n" for s in asyncio.run(record_samples()))


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    TRACE.write_text(record())
    sys.stdout.write(f"wrote {TRACE}\n")
