"""The ``TelemetrySource`` contract (``cluster/telemetry/samples.py``), one suite run against every source.

What the twin's coordinator relies on, whichever source it reads:
- ``read()`` is a coroutine that returns a list of validated samples, members of the ``Sample`` union, each of
  which survives the trace format (JSON and back);
- a subject's timestamps (a GPU's, a unit's, a scrape target's ...) never go backwards, within a read or from one
  read to the next: the validator would drop a sample older than its sensor's last as stale. An ``ActionResult``
  that the gateway could not stamp carries 0, and the twin stamps it (``actors/gateway/execution.py``);
- a source whose backend cannot be reached returns ``[]`` or ``SourceStatus`` samples and records why in
  ``errors``; it never raises. Exempt (``dead=None`` below): the sources over Redis, the twin's own spine, and
  the simulator actor; dead infrastructure raises, and the coordinator's step resumes from Redis;
- a resumable source (``position()`` / ``seek()``) reads the same samples again after seeking back;
- it survives pickling before its first read: Ray ships it into the coordinator actor with cloudpickle (the
  sources keep lambdas such as ``node_of``, which the stdlib's pickle refuses).

Each backend is the real thing where we own it or a package provides it (the simulator, a recorded trace, Redis,
sushy-tools' Redfish server, pymodbus's Modbus TCP server); dcgm-exporter, Prometheus and vLLM are their pages, in
their real formats, on a local HTTP server. Adding a source: add its :class:`Impl` to :data:`IMPLS` (a test fails
until it is there); the rig machinery is in ``source_rigs.py``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, get_args

import cloudpickle
import pytest
import redis.asyncio as aioredis

import cluster.telemetry
from actors.gateway.store import ApprovalStore
from actors.twin.physics import Topology
from cluster.actuators.feedback import FeedbackSource, MergedSource
from cluster.modbus_map import ModbusUnit
from cluster.nvml_readers import FanIn
from cluster.sources import SimSource
from cluster.telemetry.alerts import AlertSource
from cluster.telemetry.dcgm import DcgmSource
from cluster.telemetry.exporter import render_page
from cluster.telemetry.modbus import ModbusSource
from cluster.telemetry.nvml import NvmlSource, NvmlUnavailable
from cluster.telemetry.prometheus import PrometheusSource
from cluster.telemetry.redfish import RedfishSource
from cluster.telemetry.replay import ReplaySource
from cluster.telemetry.samples import ActionResult, Sample, SourceStatus, parse_sample
from cluster.telemetry.sim import Simulator, SimulatorService
from cluster.telemetry.vllm import HttpMetricsReader, VllmSource
from serving.alerts import AlertmanagerWebhook, AlertReceiver
from tests.actuators.modbus_server import SUPPLY, ModbusPlant, plant_map
from tests.cluster.test_nvml_readers import Reader
from tests.contracts.source_rigs import Impl, Rig, close, dead_url, rig
from tests.helpers import free_port
from tests.serving.test_alerts import PAYLOAD
from tests.telemetry.dcgm_pages import Exporter, Gpu, page
from tests.telemetry.test_dcgm_liveness import Clock
from tests.telemetry.test_exporter import gpu
from tests.telemetry.test_prometheus_source import answer
from tests.telemetry.test_redfish import FIXTURES, StaticRedfish
from tests.telemetry.test_vllm import TEXT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TRACE = Path(__file__).resolve().parents[1] / "scenarios" / "cooling_loss" / "trace.jsonl"
NS = "contract"
SAMPLE_TYPES: tuple[type, ...] = get_args(get_args(Sample)[0])
#: The fields that name a sample's subject, per kind: its timestamps never go backwards.
SUBJECT = {"gpu": ("node", "gpu"), "cooling": ("unit",), "link": ("link",), "job": ("job",),
           "action_result": ("action_id",), "source_status": ("source", "host"),
           "llm_engine": ("deployment", "replica"), "facility": ("node", "unit", "chassis"), "alert": ("fingerprint",)}


# --- the rigs -------------------------------------------------------------------------------------------------------
@rig
async def sim(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    # At this speed every read is due for its most ticks (600): thousands of samples, no waiting on the wall clock.
    yield Rig(SimSource(SimulatorService(Simulator(Topology.build(1, 2), seed=1), speed=1e9)))


@rig
async def replay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(ReplaySource(TRACE))


@rig
async def dcgm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    exporter = Exporter(page("DGX-01", "NVIDIA H100 80GB HBM3", [Gpu(0), Gpu(1, temp=None)]))
    try:
        yield Rig(DcgmSource([exporter.url], timeout_s=5.0, clock=Clock()))
    finally:
        exporter.stop()


@rig
async def dcgm_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(DcgmSource([dead_url("/metrics")], timeout_s=2.0, lost_after=2, clock=Clock()))


@rig
async def prometheus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """Prometheus's query API (a boundary we do not own) answering as it does for a dcgm-exporter target."""
    text = render_page([gpu(index=0), gpu(index=1, temp_c=80.2)])
    scraped = [1_795_990_000.25]
    exporter = Exporter(json.dumps(answer(text, scraped=scraped[0])))

    async def next_scrape() -> None:
        scraped[0] += 15.0
        exporter.text = json.dumps(answer(text, scraped=scraped[0], evaluated=scraped[0] + 2))

    try:
        yield Rig(PrometheusSource(f"http://{exporter.host}", timeout_s=5.0, clock=Clock()), next_scrape)
    finally:
        exporter.stop()


@rig
async def prometheus_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(PrometheusSource(dead_url(), timeout_s=2.0, lost_after=2, clock=Clock()))


@rig
async def redfish(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    shutil.copytree(FIXTURES / "bmc", tmp_path / "bmc")
    server = StaticRedfish(tmp_path / "bmc")
    server.start()
    try:
        yield Rig(RedfishSource([f"n01={server.url}"], timeout_s=5.0, clock=Clock()))
    finally:
        server.stop()


@rig
async def redfish_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(RedfishSource([f"n01={dead_url()}"], timeout_s=2.0, lost_after=2, clock=Clock()))


@rig
async def modbus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """pymodbus's own Modbus TCP server as a CDU controller; between reads its supply sensor moves."""
    async with ModbusPlant() as plant:
        units = {name: ModbusUnit.model_validate(u) for name, u in plant_map().items()}

        async def warmer() -> None:
            await plant.set(SUPPLY, await plant.get(SUPPLY) + 1)

        yield Rig(ModbusSource(units, plant.endpoint, timeout_s=2.0, clock=Clock()), warmer)


@rig
async def modbus_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    units = {name: ModbusUnit.model_validate(u) for name, u in plant_map().items()}
    yield Rig(ModbusSource(units, f"127.0.0.1:{free_port()}", timeout_s=2.0, lost_after=2, clock=Clock()))


@rig
async def vllm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    server = Exporter(TEXT)  # a vLLM OpenAI server's /metrics page
    try:
        yield Rig(VllmSource(HttpMetricsReader([server.url], "external"), clock=Clock(), every_s=0.0))
    finally:
        server.stop()


@rig
async def vllm_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(VllmSource(HttpMetricsReader([dead_url("/metrics")], "external", timeout_s=2.0), clock=Clock(),
                         every_s=0.0))


@rig
async def alerts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    redis_url = request.getfixturevalue("redis_url")
    receiver = AlertReceiver(redis_url, NS, "t" * 16, clock=Clock())

    async def notify() -> None:
        await receiver.put(AlertmanagerWebhook.model_validate(PAYLOAD))

    await notify()
    try:
        yield Rig(AlertSource(redis_url, NS), notify)
    finally:
        await close(receiver)


@asynccontextmanager
async def published(redis_url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The gateway's store publishing feedback: a twin-stamped outcome miss, or an unstamped result (ts 0)."""
    store = ApprovalStore(aioredis.Redis.from_url(redis_url), NS)
    n = [0]

    async def publish() -> None:
        n[0] += 1
        await store.publish(ActionResult(ts=100.0 + n[0] if n[0] % 2 else 0.0, action_id=f"act-{n[0]}",
                                         approval_id=f"ap-{n[0]}", action_kind="notify", status="failed",
                                         detail="outcome missed"))

    await publish()
    try:
        yield publish
    finally:
        await store.redis.aclose()


@rig
async def feedback(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    redis_url = request.getfixturevalue("redis_url")
    async with published(redis_url) as publish:
        yield Rig(FeedbackSource(redis_url, NS), publish)


@rig
async def merged(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """What ``opsloop up`` reads beside a replayed trace: the trace and the feedback stream, as one source."""
    redis_url = request.getfixturevalue("redis_url")
    async with published(redis_url) as publish:
        yield Rig(MergedSource(ReplaySource(TRACE), FeedbackSource(redis_url, NS)), publish)


@rig
async def fan_in(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    yield Rig(FanIn({"gpu-node-a": Reader("gpu-node-a"), "gpu-node-b": Reader("gpu-node-b")}, clock=Clock()))


@rig
async def fan_in_dead(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    gone = Reader("gpu-node-a")
    gone.mode = "fail"  # its actor died with the node
    yield Rig(FanIn({"gpu-node-a": gone}, lost_after=2, clock=Clock()))


@rig
async def nvml(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    try:
        source = NvmlSource(clock=Clock())
    except NvmlUnavailable as exc:
        pytest.skip(f"no NVIDIA GPU here: {exc}")
    yield Rig(source)


#: Every TelemetrySource of cluster/, by name.
IMPLS: dict[str, Impl] = {
    "sim": Impl(SimSource, sim),  # the simulator actor: dead, it raises (the coordinator resumes from Redis)
    "replay": Impl(ReplaySource, replay, resumable=True),  # a file, no backend
    "dcgm": Impl(DcgmSource, dcgm, dcgm_dead),
    "prometheus": Impl(PrometheusSource, prometheus, prometheus_dead),
    "redfish": Impl(RedfishSource, redfish, redfish_dead),
    "modbus": Impl(ModbusSource, modbus, modbus_dead),
    "vllm": Impl(VllmSource, vllm, vllm_dead),
    "alerts": Impl(AlertSource, alerts, resumable=True),  # Redis: dead infrastructure raises
    "feedback": Impl(FeedbackSource, feedback, resumable=True),  # Redis, likewise
    "merged": Impl(MergedSource, merged, resumable=True),
    "fan_in": Impl(FanIn, fan_in, fan_in_dead),
    "nvml": Impl(NvmlSource, nvml),  # needs a GPU; its readers' failures are FanIn's
}


def params(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.gpu) if n == "nvml" else n for n in names]


ALL = params(list(IMPLS))
DEAD = params([n for n, i in IMPLS.items() if i.dead is not None])
RESUMABLE = params([n for n, i in IMPLS.items() if i.resumable])


async def reads(r: Rig, n: int) -> list[list[Any]]:
    """``n`` reads, the backend fed with something new between two."""
    out = []
    for k in range(n):
        if k:
            await r.feed()
        out.append(await r.source.read())
    return out


# --- the contract ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
async def test_read_is_async_and_returns_validated_samples(name: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    assert inspect.iscoroutinefunction(IMPLS[name].cls.read)
    async with IMPLS[name].build(request, tmp_path) as r:
        got = await reads(r, 3)
    assert all(isinstance(batch, list) for batch in got)
    samples = [s for batch in got for s in batch]
    assert any(not isinstance(s, SourceStatus) for s in samples), "a source over a live backend reports something"
    for s in samples:
        assert isinstance(s, SAMPLE_TYPES), type(s)
        assert parse_sample(s.model_dump(mode="json")) == s, "a sample survives the trace format"


@pytest.mark.parametrize("name", ALL)
async def test_a_subjects_timestamps_never_go_backwards(name: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    async with IMPLS[name].build(request, tmp_path) as r:
        got = await reads(r, 4)
    last: dict[tuple, float] = {}
    for k, batch in enumerate(got):
        for s in batch:
            if isinstance(s, ActionResult) and s.ts == 0:
                continue  # unstamped: the twin stamps it with its own time
            key = (s.kind, *(getattr(s, f) for f in SUBJECT[s.kind]))
            assert s.ts >= last.get(key, 0.0), f"read {k}: {key} went back from {last[key]} to {s.ts}"
            last[key] = s.ts
    assert last, "timestamps were seen"


@pytest.mark.parametrize("name", DEAD)
async def test_an_unreachable_backend_is_recorded_never_raised(name: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    dead = IMPLS[name].dead
    assert dead is not None
    async with dead(request, tmp_path) as r:
        got = await reads(r, 3)
        errors = dict(r.source.errors)
    for s in (s for batch in got for s in batch):
        assert isinstance(s, SourceStatus) and not s.ok and s.error, s
    assert errors and all(errors.values()), "why it read nothing is recorded"


@pytest.mark.parametrize("name", RESUMABLE)
async def test_seeking_back_reads_the_same_samples_again(name: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    async with IMPLS[name].build(request, tmp_path) as r:
        src = r.source
        await src.read()
        at = src.position()
        await r.feed()
        once = await src.read()
        src.seek(at)
        again = await src.read()
    assert once, "something was read after the position"
    assert again == once


@pytest.mark.parametrize("name", ALL)
async def test_it_pickles_before_its_first_read_and_reads_where_it_lands(name: str, request: pytest.FixtureRequest,
                                                                         tmp_path: Path) -> None:
    async with IMPLS[name].build(request, tmp_path) as r:
        copy = cloudpickle.loads(cloudpickle.dumps(r.source))  # what Ray does to an actor's arguments
        try:
            got = await copy.read()
        finally:
            await close(copy)
    assert isinstance(got, list) and got and all(isinstance(s, SAMPLE_TYPES) for s in got)


def test_every_source_of_the_cluster_is_in_the_suite() -> None:
    """Every ``...Source`` class of ``cluster/`` (and ``FanIn``) has an entry in :data:`IMPLS`; the resumable
    ones are those with ``seek``."""
    modules = [importlib.import_module(m.name) for m in pkgutil.iter_modules(cluster.telemetry.__path__,
                                                                            "cluster.telemetry.")]
    modules += [importlib.import_module(m) for m in ("cluster.actuators.feedback", "cluster.nvml_readers",
                                                     SimSource.__module__)]
    found = {cls for mod in modules for name, cls in vars(mod).items()
             if isinstance(cls, type) and cls.__module__ == mod.__name__ and not getattr(cls, "_is_protocol", False)
             and (name.endswith("Source") or cls is FanIn)}
    assert found == {i.cls for i in IMPLS.values()}
    assert {i.cls for i in IMPLS.values() if hasattr(i.cls, "seek")} == {i.cls for i in IMPLS.values() if i.resumable}
    assert set(SUBJECT) == {get_args(t.model_fields["kind"].annotation)[0] for t in SAMPLE_TYPES}
    assert TRACE.is_file()
