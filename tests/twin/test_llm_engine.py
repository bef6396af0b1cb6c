"""The LLM facility's detector in the twin, without Ray: rates per replica, edge-triggered events, its state."""

from __future__ import annotations

import pytest

from actors.twin.llm_engine import LlmEngineDetector
from actors.twin.model import Thresholds, TwinModel
from actors.twin.state import StateError, load, pack
from cluster.telemetry.samples import LlmEngineSample


def reading(ts: float, replica: str = "r1", **fields: float) -> LlmEngineSample:
    return LlmEngineSample(ts=ts, deployment="llm:m", replica=replica, **fields)


#: As vllm:* metrics of TEXT in tests/telemetry/test_vllm.py read at ts 10.
PRESSED = {"kv_cache_usage": 0.97, "running": 8, "waiting": 5, "preemptions_total": 2,
           "generation_tokens_total": 1200, "ttft_sum_s": 3.0, "ttft_count": 12}


def test_rates_and_edge_triggered_events() -> None:
    d = LlmEngineDetector(kv_pressure_at=0.95, backlog_at=4)
    assert d.observe(reading(0, generation_tokens_total=100, ttft_sum_s=1, ttft_count=2)) == []
    evs = d.observe(reading(10, **PRESSED))
    assert [e.kind for e in evs] == ["kv_cache_pressure", "llm_queue_backlog"]
    assert evs[0].severity == "critical" and evs[0].data["preemptions"] == 2 and evs[0].subject == "llm/llm:m/r1"
    assert evs[0].ts == 10.0 and evs[0].data["replica"] == "r1" and evs[0].data["deployment"] == "llm:m"
    assert evs[1].data["tokens_per_s"] == 110.0 and evs[1].data["ttft_s"] == 0.2
    latest = d.view()["replicas"][0]
    assert latest["tokens_per_s"] == 110.0 and latest["ttft_s"] == 0.2 and latest["preemptions"] == 2
    assert d.observe(reading(20, **PRESSED)) == []  # still in the same episodes
    assert d.observe(reading(30, preemptions_total=2, generation_tokens_total=1300)) == []  # recovered
    again = d.observe(reading(40, kv_cache_usage=0.99, preemptions_total=2, generation_tokens_total=1400))
    assert [e.kind for e in again] == ["kv_cache_pressure"] and again[0].severity == "warning"
    replay = LlmEngineDetector()
    replay.observe(reading(0, generation_tokens_total=100, ttft_sum_s=1, ttft_count=2))
    assert [e.to_json() for e in replay.observe(reading(10, **PRESSED))] == [e.to_json() for e in evs]


def test_replicas_are_kept_apart() -> None:
    """Rates come from one replica's own counters: r2's much larger counters do not make r1 look busy."""
    d = LlmEngineDetector()
    d.observe(reading(0, "r1", generation_tokens_total=100))
    d.observe(reading(0, "r2", generation_tokens_total=90_000, preemptions_total=7))
    assert d.observe(reading(10, "r1", generation_tokens_total=200, preemptions_total=0)) == []
    evs = d.observe(reading(10, "r2", generation_tokens_total=91_000, preemptions_total=8, waiting=4))
    assert [(e.kind, e.subject) for e in evs] == [("kv_cache_pressure", "llm/llm:m/r2"),
                                                  ("llm_queue_backlog", "llm/llm:m/r2")]
    view = d.view()
    assert [(r["replica"], r["tokens_per_s"], r["preemptions"]) for r in view["replicas"]] == [
        ("r1", 10.0, 0), ("r2", 100.0, 1)]
    assert view["tokens_per_s"] == 110.0 and view["preemptions"] == 1 and view["waiting"] == 4
    both = [e for r in ("r1", "r2") for e in LlmEngineDetector().observe(reading(5, r, kv_cache_usage=0.96))]
    assert len({e.event_id for e in both}) == 2, "two replicas' episodes in one instant are two events"


def test_a_replica_not_read_for_forget_s_is_forgotten() -> None:
    d = LlmEngineDetector(forget_s=100.0)
    d.observe(reading(0, "old", kv_cache_usage=0.99))
    d.observe(reading(50, "new"))
    assert [r["replica"] for r in d.view()["replicas"]] == ["new", "old"]
    d.observe(reading(101, "new"))
    assert [r["replica"] for r in d.view()["replicas"]] == ["new"]
    assert LlmEngineDetector().view() is None


def test_the_model_folds_llm_samples_with_its_thresholds_and_shows_the_facility() -> None:
    m = TwinModel(thresholds=Thresholds(kv_pressure_at=0.5, llm_backlog_at=2))
    evs = m.ingest([reading(3, kv_cache_usage=0.6, waiting=2)])
    assert [e.kind for e in evs] == ["kv_cache_pressure", "llm_queue_backlog"] and m.now == 3
    snap = m.snapshot()
    assert snap["llm"]["kv_cache_usage"] == 0.6 and snap["samples_seen"] == 1 and snap["gpus"] == []
    assert "llm" not in TwinModel().snapshot(), "no LLM facility before a reading"
    restored = TwinModel.from_state(m.to_state())
    assert restored.th.kv_pressure_at == 0.5 and restored.llm.backlog_at == 2
    assert restored.ingest([reading(4, kv_cache_usage=0.7, waiting=3)]) == []  # the episodes stay open


def test_state_round_trips_through_msgpack_and_refuses_what_does_not_fit() -> None:
    d = LlmEngineDetector()
    d.observe(reading(0, generation_tokens_total=100, ttft_sum_s=1, ttft_count=2))
    d.observe(reading(10, **PRESSED))
    back = load(pack("t.llm", d.to_state()), "t.llm", "k", lambda doc: LlmEngineDetector.from_state(doc))
    assert back.view() == d.view()
    assert [e.to_json() for e in back.observe(reading(20, waiting=9))] == [
        e.to_json() for e in d.observe(reading(20, waiting=9))]
    state = d.to_state()
    wrong = {**state, "replicas": {"llm:m/other": state["replicas"]["llm:m/r1"]}}
    with pytest.raises(StateError, match="holds a reading of llm:m/r1"):
        LlmEngineDetector.from_state(wrong)
    rep = state["replicas"]["llm:m/r1"]
    with pytest.raises(StateError, match="llm rates"):
        LlmEngineDetector.from_state({**state, "replicas": {"llm:m/r1": {**rep, "latest": {"ts": 1.0}}}})
    with pytest.raises(StateError, match="llm pressure"):
        LlmEngineDetector.from_state({**state, "replicas": {"llm:m/r1": {**rep, "pressure": "yes"}}})
    with pytest.raises(ValueError):
        LlmEngineDetector.from_state({**state, "replicas": {"llm:m/r1": {**rep, "prev": {"ts": -1}}}})
