"""Live dcgm scrapes: concurrent with per-host timeouts, and an exporter or GPU that goes quiet is never silent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.twin.model import TwinModel
from actors.twin.shards import ShardedTwin
from cluster.settings import load_settings
from cluster.sources import Paced, discover_dcgm, discover_replay
from cluster.telemetry.dcgm import DcgmSource
from cluster.telemetry.liveness import Liveness
from cluster.telemetry.samples import GpuSample, SourceStatus
from tests.telemetry.dcgm_pages import Exporter, Gpu, page


@pytest.fixture
def two() -> Iterator[tuple[Exporter, Exporter]]:
    a = Exporter(page("DGX-01", "NVIDIA H100 80GB HBM3", [Gpu(0), Gpu(1)]))
    b = Exporter(page("ip-10-0-1-23.ec2.internal", "NVIDIA H200", [Gpu(0), Gpu(1)]))
    yield a, b
    for e in (a, b):
        e.stop()


class Clock:
    def __init__(self) -> None:
        self.t = 1_790_000_000.0

    def __call__(self) -> float:
        self.t += 5.0
        return self.t


def statuses(samples: list) -> list[tuple[str, bool, int]]:
    return [(s.host, s.ok, s.missed) for s in samples if isinstance(s, SourceStatus)]


def test_liveness_reports_only_the_transitions() -> None:
    live = Liveness(lost_after=3)
    assert [live.missed("h") for _ in range(5)] == [None, None, 3, None, None]
    assert live.seen("h") is True and live.seen("h") is False
    assert live.missed("h") is None  # the count starts again after an answer
    with pytest.raises(ValueError, match="at least 1"):
        Liveness(lost_after=0)


@pytest.mark.anyio
async def test_an_exporter_that_stops_answering_is_lost_on_the_third_scrape_and_restored(two) -> None:
    a, b = two
    src = DcgmSource([a.url, b.url], timeout_s=2.0, clock=Clock(), lost_after=3)
    first = await src.read()
    assert {s.node for s in first if isinstance(s, GpuSample)} == {"DGX-01", "ip-10-0-1-23.ec2.internal"}
    b.status = 503
    got = [statuses(await src.read()) for _ in range(4)]
    assert got == [[], [], [(b.host, False, 3)], []]  # lost once, on the third miss
    assert "503" in src.errors[b.url]
    b.status = 200
    back = await src.read()
    assert statuses(back) == [(b.host, True, 0)] and b.url not in src.errors
    assert {s.node for s in back if isinstance(s, GpuSample)} == {"DGX-01", "ip-10-0-1-23.ec2.internal"}


@pytest.mark.anyio
async def test_a_dead_exporter_and_a_gpu_missing_from_its_page_are_both_named(two) -> None:
    a, b = two
    src = DcgmSource([a.url, b.url], timeout_s=2.0, clock=Clock(), lost_after=2)
    await src.read()
    b.stop()  # connection refused from now on
    a.text = page("DGX-01", "NVIDIA H100 80GB HBM3", [Gpu(0)])  # gpu1 fell off the page
    await src.read()
    lost = await src.read()
    assert sorted(statuses(lost)) == sorted([("DGX-01/gpu1", False, 2), (b.host, False, 2)])
    assert "ConnectError" in src.errors[b.url]
    twin = ShardedTwin({"s01": ["DGX-01"], "s02": ["ip-10-0-1-23.ec2.internal"]})
    events = twin.ingest(lost)
    assert sorted((e.kind, e.subject) for e in events) == sorted([("telemetry_lost", "DGX-01/gpu1"),
                                                                  ("telemetry_lost", b.host)])
    assert all(e.data["source"] == "dcgm" and e.data["missed"] == 2 for e in events)


@pytest.mark.anyio
async def test_scrapes_run_at_once_so_one_slow_exporter_does_not_hold_the_others(two) -> None:
    # Each exporter answers only once both requests are in flight: scraped one after the other, the first would
    # time out waiting for the second (the barrier breaks) and both would fail.
    a, b = two
    gate = threading.Barrier(2, timeout=3.0)
    a.barrier = b.barrier = gate
    src = DcgmSource([a.url, b.url], timeout_s=5.0, clock=Clock())
    samples = await src.read()
    assert src.errors == {} and len([s for s in samples if isinstance(s, GpuSample)]) == 4


def test_lost_and_restored_events_come_from_the_twin_alone_and_replay_the_same() -> None:
    lost = SourceStatus(ts=10.0, source="redfish", host="bmc-7", ok=False, missed=3, error="ReadTimeout")
    back = SourceStatus(ts=25.0, source="redfish", host="bmc-7", ok=True)
    runs = []
    for _ in range(2):
        m = TwinModel()
        runs.append([e.model_dump_json() for e in m.ingest([lost]) + m.ingest([back])])
    assert runs[0] == runs[1]
    kinds = [e.split('"kind":"')[1].split('"')[0] for e in runs[0]]
    assert kinds == ["telemetry_lost", "telemetry_restored"]


@pytest.mark.anyio
async def test_paced_reads_at_most_once_per_interval() -> None:
    class Counting:
        def __init__(self) -> None:
            self.reads = 0
            self.errors = {"x": "y"}

        async def read(self) -> list:
            self.reads += 1
            return [self.reads]

    now = [0.0]
    paced = Paced(Counting(), every_s=5.0, clock=lambda: now[0])
    got = []
    for t in (0.0, 1.0, 4.9, 5.0, 7.0, 10.5):
        now[0] = t
        got.append(await paced.read())
    assert got == [[1], [], [], [2], [], [3]] and paced.errors == {"x": "y"}


def test_discovery_names_hosts_as_their_pages_print_them(two, tmp_path: Path) -> None:
    a, b = two
    b.stop()
    assert discover_dcgm([a.url, b.url], 1.0) == ["DGX-01", "127.0.0.1"]  # a dead one: its URL's host
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"ts": 0, "node": "DGX-01", "gpu": 0, "temp_c": 50}\nnot json\n'
                     '{"ts": 0, "kind": "cooling", "unit": "cu01", "supply_c": 20}\n'
                     '{"ts": 1, "node": "n-2.example.com", "gpu": 0, "temp_c": 51}\n')
    assert discover_replay(trace) == ["DGX-01", "n-2.example.com"]


def test_settings_name_what_a_source_needs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs dcgm_urls"):
        load_settings(telemetry="dcgm", data_dir=tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        load_settings(telemetry="replay", replay_file=tmp_path / "none.jsonl", data_dir=tmp_path)
    with pytest.raises(ValueError, match="actuator=sim acts on the simulator"):
        load_settings(telemetry="dcgm", dcgm_urls=["http://127.0.0.1:9400/metrics"], actuator="sim", data_dir=tmp_path)
    with pytest.raises(ValueError, match="not an http"):
        load_settings(telemetry="dcgm", dcgm_urls=["dgx-01:9400"], data_dir=tmp_path)
    s = load_settings(telemetry="dcgm", dcgm_urls=["http://127.0.0.1:9400/metrics"], data_dir=tmp_path)
    assert s.actuator == "dry-run"  # the simulator's actuator follows the simulator
    with pytest.raises(ValueError, match="at least one exporter"):
        DcgmSource([])
