"""vLLM engine metrics as telemetry: parsing pages, the source's bad input, real HTTP exporters, and the twin (the
only writer of the events they mean) appending ``kv_cache_pressure`` to the event log in Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from actors.twin.shard_service import TwinCoordinator, TwinShard
from actors.twin.shards import partition
from cluster.actuators.feedback import MergedSource
from cluster.telemetry.samples import LlmEngineSample
from cluster.telemetry.vllm import (
    READ,
    HttpMetricsReader,
    MetricsPage,
    PageError,
    VllmSource,
    parse_engine_metrics,
)
from tests.helpers import free_port

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
#: Two engines of one replica (data parallel): counters add up, the fullest KV cache counts.
TWO_ENGINES = """vllm:gpu_cache_usage_perc{engine="0"} 0.4
vllm:gpu_cache_usage_perc{engine="1"} 0.9
vllm:num_requests_waiting{engine="0"} 2
vllm:num_requests_waiting{engine="1"} 3
vllm:generation_tokens_total{engine="0"} 10
vllm:generation_tokens_total{engine="1"} 15
"""
HTML = "<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>\n"


def test_parse_reads_the_engine_gauges_and_counters() -> None:
    v = parse_engine_metrics(TEXT)
    assert (v["kv_cache_usage"], v["running"], v["waiting"], v["preemptions_total"]) == (0.97, 8, 5, 2)
    assert (v["generation_tokens_total"], v["ttft_sum_s"], v["ttft_count"]) == (1200, 3.0, 12)
    assert "prompt_tokens_total" not in v  # absent on the page: the sample's default, not a guess
    two = parse_engine_metrics(TWO_ENGINES)
    assert (two["kv_cache_usage"], two["waiting"], two["generation_tokens_total"]) == (0.9, 5, 25)


def test_a_page_that_gives_no_engine_reading_is_a_clear_error() -> None:
    with pytest.raises(PageError, match="not a Prometheus metrics page: .*502 Bad Gateway"):
        parse_engine_metrics(HTML)
    with pytest.raises(PageError, match="no vllm:\\* engine metrics"):
        parse_engine_metrics("process_cpu_seconds_total 12.0\n")
    bad: list[str] = []
    assert parse_engine_metrics(TEXT + "vllm:num_requests_waiting{engine= 7\n", bad)["waiting"] == 5
    assert bad == ["vllm:num_requests_waiting{engine= 7"], "a broken line is skipped, the page kept"


class Pages:
    """The engines as a ``MetricsReader`` (what vLLM serves is not ours): the next list of pages per read."""

    def __init__(self, *reads: list[MetricsPage] | Exception) -> None:
        self.reads = list(reads)

    async def read(self) -> list[MetricsPage]:
        got = self.reads.pop(0)
        if isinstance(got, Exception):
            raise got
        return got


def page(replica: str, text: str) -> MetricsPage:
    return MetricsPage("llm:m", replica, text)


@pytest.mark.anyio
async def test_bad_pages_are_counted_and_nothing_else_is_lost() -> None:
    source = VllmSource(Pages(
        [page("r1", TEXT), page("r2", HTML), page("r3", TEXT.replace("0.97", "NaN")),
         page("r4", TEXT.replace("0.97", "97.0")), MetricsPage("llm:m", "r5", error="ConnectError: refused")],
        ConnectionError("the Serve controller is not up yet"),
        [page("r2", TEXT)],
    ), clock=lambda: 12.5, every_s=0.0)
    first = await source.read()
    assert [(s.replica, s.ts, s.kv_cache_usage) for s in first] == [("r1", 12.5, 0.97)]
    assert isinstance(first[0], LlmEngineSample) and first[0].waiting == 5
    assert source.errors["llm:m/r2"].startswith("not a Prometheus metrics page")
    assert source.errors["llm:m/r3"].startswith("nan:") and source.errors["llm:m/r4"].startswith("out_of_range:")
    assert source.errors["llm:m/r5"] == "ConnectError: refused"
    assert dict(source.validator.rejected["vllm"]) == {"bad_page": 1, "nan": 1, "out_of_range": 1}
    assert source.validator.accepted["vllm"] == 1 and [q.reason for q in source.quarantined] == ["nan", "out_of_range"]
    assert await source.read() == [] and "not up yet" in source.errors[READ]  # never raised: the fleet goes on
    again = await source.read()
    assert [s.replica for s in again] == ["r2"] and READ not in source.errors and "llm:m/r2" not in source.errors


@pytest.mark.anyio
async def test_reads_are_paced_and_stamped_with_the_fleet_clock() -> None:
    wall = [100.0]

    async def sim_now() -> float:
        return 40.0 + wall[0]

    source = VllmSource(Pages([page("r1", TEXT)], [page("r1", TEXT)]), clock=sim_now, every_s=5.0,
                        wall=lambda: wall[0])
    assert [s.ts for s in await source.read()] == [140.0]
    wall[0] = 104.9
    assert await source.read() == []  # not due: the reader is not asked
    wall[0] = 105.0
    assert [s.ts for s in await source.read()] == [145.0] and source.reads == 2


@pytest.fixture
def exporters() -> Iterator[list[str]]:
    """Two real Prometheus exporters (prometheus_client's HTTP server) serving vLLM-named gauges, on 127.0.0.1."""
    servers, urls = [], []
    for kv in (0.5, 0.96):
        registry = CollectorRegistry()
        Gauge("vllm:kv_cache_usage_perc", "KV-cache usage.", ["engine"], registry=registry).labels("0").set(kv)
        Gauge("vllm:num_requests_waiting", "Waiting.", ["engine"], registry=registry).labels("0").set(1)
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
        urls.append(f"http://127.0.0.1:{port}/metrics")
    yield urls
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.anyio
async def test_http_reader_reads_each_server_as_its_own_replica(exporters: list[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    source = VllmSource(HttpMetricsReader([*exporters, dead], "external"), clock=lambda: 7.0, every_s=0.0)
    got = await source.read()
    assert [(s.replica, s.kv_cache_usage) for s in got] == sorted(
        (url.split("/")[2], kv) for url, kv in zip(exporters, (0.5, 0.96), strict=True))
    assert list(source.errors) == [f"external/{dead.split('/')[2]}"]
    with pytest.raises(ValueError, match="not an http"):
        HttpMetricsReader(["file:///etc/passwd"], "external")


@pytest.mark.anyio
async def test_the_twin_appends_the_llm_events_and_counts_bad_pages(redis_url: str) -> None:
    """The coordinator (shards in-process) is the one writer: the events carry the samples' fleet time."""
    layout = partition(["n01"], 1)

    def spawn(shard: str) -> Any:
        return TwinShard(shard, layout[shard], redis_url=redis_url, namespace="llm")

    async def clock() -> float:
        return 77.0

    source = VllmSource(Pages([page("r1", "vllm:num_requests_waiting 0\n"), page("r2", HTML)], [page("r1", TEXT)]),
                        clock, every_s=0.0)
    twin = TwinCoordinator(MergedSource(source), spawn, layout, redis_url, "llm")
    assert await twin.step() == 0
    source.clock = lambda: 78.0
    assert await twin.step() == 2
    rows = redis.Redis.from_url(redis_url).xrange("llm:events")
    assert [(b'"kind":"kv_cache_pressure"' in f[b"event"], b'"ts":78.0' in f[b"event"]) for _, f in rows] == [
        (True, True), (False, True)]
    snap = await twin.snapshot()
    assert snap["llm"]["replicas"][0]["replica"] == "r1" and snap["ts"] == 78.0
    series = [s for m in await twin.metrics() if m["name"] == "opsloop_samples_quarantined_total" for s in m["series"]]
    assert {"labels": {"source": "vllm", "reason": "bad_page"}, "value": 1} in series


def test_opsloop_up_merges_the_source_the_llm_setting_names(tmp_path: Any) -> None:
    """``deploy.llm_sources``: every replica of the vLLM app, or the external server's /metrics; picklable into
    the twin's actor (the Serve handle is looked up there)."""
    import pickle

    from cluster import deploy
    from cluster.settings import Settings
    from cluster.telemetry.vllm import ServeReplicasReader

    assert deploy.llm_sources(Settings(data_dir=tmp_path, llm="none")) == []
    (vllm,) = deploy.llm_sources(Settings(data_dir=tmp_path, llm="vllm", llm_metrics_every_s=2.0))
    assert isinstance(vllm.reader, ServeReplicasReader) and vllm.reader.app == deploy.LLM_APP and vllm.every_s == 2.0
    (ext,) = deploy.llm_sources(Settings(data_dir=tmp_path, llm="external", openai_base_url="http://127.0.0.1:9/v1",
                                         openai_model="m"))
    assert ext.reader.urls == ["http://127.0.0.1:9/metrics"] and ext.reader.deployment == "m"
    assert pickle.loads(pickle.dumps(vllm)).reader.app == deploy.LLM_APP
