"""opsloop watching its own serving: parsing vLLM metrics, the pure detector, and the watcher on a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from actors.twin.eventlog import RedisEventLog
from serving.llm_metrics import EngineStats, LLMFacilityDetector, LLMWatcherService, parse_vllm_metrics

TEXT = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.97
vllm:num_requests_running{engine="0",model_name="m"} 8.0
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
vllm:num_preemptions_total{engine="0",model_name="m"} 2.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1200.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 3.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1.0
process_cpu_seconds_total 12.0
"""


def test_parse_reads_the_engine_gauges_and_counters() -> None:
    s = parse_vllm_metrics(TEXT, ts=10.0)
    assert (s.kv_cache_usage, s.running, s.waiting, s.preemptions_total) == (0.97, 8, 5, 2)
    assert (s.generation_tokens_total, s.ttft_sum_s, s.ttft_count) == (1200, 3.0, 12)


def test_detector_rates_and_edge_triggered_events() -> None:
    d = LLMFacilityDetector("llm/m", kv_pressure_at=0.95, backlog_at=4)
    assert d.observe(EngineStats(ts=0, generation_tokens_total=100, ttft_sum_s=1, ttft_count=2)) == []
    evs = d.observe(parse_vllm_metrics(TEXT, ts=10.0))
    assert [e.kind for e in evs] == ["kv_cache_pressure", "llm_queue_backlog"]
    assert evs[0].severity == "critical" and evs[0].data["preemptions"] == 2 and evs[0].subject == "llm/m"
    assert d.latest["tokens_per_s"] == 110.0 and d.latest["ttft_s"] == 0.2
    assert d.observe(parse_vllm_metrics(TEXT, ts=20.0)) == []  # still in the same episode
    assert d.observe(EngineStats(ts=30, preemptions_total=2, generation_tokens_total=1300)) == []  # recovered
    again = d.observe(EngineStats(ts=40, kv_cache_usage=0.99, preemptions_total=2, generation_tokens_total=1400))
    assert [e.kind for e in again] == ["kv_cache_pressure"] and again[0].severity == "warning"
    replay = LLMFacilityDetector("llm/m")
    replay.observe(EngineStats(ts=0, generation_tokens_total=100, ttft_sum_s=1, ttft_count=2))
    assert [e.event_id for e in replay.observe(parse_vllm_metrics(TEXT, ts=10.0))] == [e.event_id for e in evs]


class FakeReader:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    async def read(self) -> str:
        return self.texts.pop(0)


@pytest.mark.anyio
async def test_watcher_appends_events_to_the_twin_event_log(redis_url: str) -> None:
    async def clock() -> float:
        return 77.0

    w = LLMWatcherService(FakeReader(["vllm:num_requests_waiting 0\n", TEXT]), redis_url, "t", "llm/m", clock)
    assert await w.step() == []
    assert [e.kind for e in await w.step()] == ["kv_cache_pressure", "llm_queue_backlog"]
    log = RedisEventLog(aioredis.Redis.from_url(redis_url), "t:events")
    recent = await log.recent(10)
    assert [e.kind for e in recent] == ["kv_cache_pressure", "llm_queue_backlog"] and recent[0].ts == 77.0
    assert (await w.latest())["waiting"] == 5
