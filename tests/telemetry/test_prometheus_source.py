"""``PrometheusSource`` without a Prometheus: the query it sends, the mapping of an API answer (shaped as
Prometheus's ``/api/v1/query`` answers) to GPU samples stamped with their scrape time, and what it does when
nothing, or something else than Prometheus, answers. Against a real Prometheus: tests/integration."""

from __future__ import annotations

import math
import socket

import pytest
from prometheus_client import start_http_server

from cluster.telemetry.dcgm import FIELDS, gpu_records, parse_metrics
from cluster.telemetry.exporter import families as page_families
from cluster.telemetry.exporter import registry_of, render_page
from cluster.telemetry.prometheus import SCRAPED_AT, PrometheusSource, QueryResponse, dcgm_query, to_samples
from cluster.telemetry.samples import SourceStatus
from tests.telemetry.test_exporter import gpu


def answer(page: str, job: str = "dcgm", instance: str = "127.0.0.1:9400", scraped: float = 1795990000.25,
           evaluated: float = 1795990003.0) -> dict:
    """A ``/api/v1/query`` answer of ``dcgm_query()`` for a target that served ``page``, as Prometheus gives it."""
    result = [{"metric": {"__name__": s.name, **s.labels, "job": job, "instance": instance},
               "value": [evaluated, repr(float(s.value))]}
              for s in (x for f in _fams(page) for x in f.samples)]
    result.append({"metric": {"job": job, "instance": instance, SCRAPED_AT: "1"}, "value": [evaluated, str(scraped)]})
    result.append({"metric": {"job": "prometheus", "instance": "localhost:9090", SCRAPED_AT: "1"},
                   "value": [evaluated, "1795990002.5"]})
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def _fams(page: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(page))


def test_the_query_asks_for_every_mapped_field_and_each_targets_scrape_time() -> None:
    q = dcgm_query()
    assert all(name in q for name in FIELDS)
    assert q.endswith(f'or label_replace(timestamp(up), "{SCRAPED_AT}", "1", "job", ".*")')
    assert '{__name__=~"' in dcgm_query('job="dcgm"') and ',job="dcgm"}' in dcgm_query('job="dcgm"')


def test_an_answer_maps_like_the_page_and_carries_the_scrape_time() -> None:
    page = render_page([gpu(index=0), gpu(index=1, temp_c=80.2)], {"DGX-01/gpu1": 79})
    series = QueryResponse.model_validate(answer(page)).data.result  # type: ignore[union-attr]
    via_prometheus = gpu_records(to_samples(series), stamp=True)
    direct = parse_metrics(page)
    assert [r.pop("ts") for r in via_prometheus] == [1795990000.25, 1795990000.25], "the scrape's time, not now"
    for a, b in zip(via_prometheus, direct, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_a_series_without_a_scrape_time_or_hostname_falls_back() -> None:
    series = QueryResponse.model_validate({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "gpu": "2", "instance": "gpu-7.dc1:9400", "job": "fed"},
         "value": [1795990003.5, "64"]},
        {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "gpu": "3", "instance": "gpu-7.dc1:9400", "job": "fed"},
         "value": [1795990003.5, "NaN"]},
        {"metric": {"__name__": "up", "instance": "gpu-7.dc1:9400", "job": "fed"}, "value": [1795990003.5, "1"]},
    ]}}).data.result  # type: ignore[union-attr]
    a, b = gpu_records(to_samples(series), stamp=True)
    assert (a["node"], a["gpu"], a["temp_c"], a["ts"]) == ("gpu-7.dc1", 2, 64.0, 1795990003.5)
    assert b["gpu"] == 3 and math.isnan(b["temp_c"]), "NaN stays missing, never 0"


@pytest.mark.anyio
async def test_prometheus_that_does_not_answer_is_recorded_then_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    src = PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=2, lost_after=2)
    try:
        assert await src.read() == []
        assert "ConnectError" in src.errors[src.url]
        [lost] = await src.read()
        assert isinstance(lost, SourceStatus) and not lost.ok and lost.missed == 2
        assert (lost.source, lost.host) == ("prometheus", f"127.0.0.1:{port}")
        assert await src.read() == [], "lost once, not on every read"
    finally:
        await src.aclose()


@pytest.mark.anyio
async def test_something_else_than_prometheus_is_recorded_not_raised() -> None:
    fams = page_families([gpu()])
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry_of(lambda: fams))
    try:
        src = PrometheusSource(f"http://127.0.0.1:{server.server_port}/")
        assert src.query_url == f"http://127.0.0.1:{server.server_port}/api/v1/query"
        assert await src.read() == []
        assert "not an answer of Prometheus's query API" in src.errors[src.url]
        await src.aclose()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize("url", ["ftp://prometheus:9090", "prometheus:9090", "http://"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        PrometheusSource(url)


@pytest.mark.anyio
async def test_the_source_pickles_into_an_actor_with_its_client_left_behind() -> None:
    import cloudpickle  # what Ray uses to ship an actor's arguments

    src = PrometheusSource("http://127.0.0.1:9/prom", match='job="dcgm"', timeout_s=1)
    await src.read()  # opens its HTTP client (nothing answers on the discard port)
    assert src._client is not None
    copy = cloudpickle.loads(cloudpickle.dumps(src))
    await src.aclose()
    assert copy._client is None and copy.errors == src.errors
    assert copy.query_url == "http://127.0.0.1:9/prom/api/v1/query" and copy.query == src.query
