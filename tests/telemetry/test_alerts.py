"""Alerts as telemetry: the receiver's inbox read by ``AlertSource`` (resumable), and the twin's
``alert_firing`` / ``alert_resolved`` events (one per notification, whatever Alertmanager re-sends).

Alerts enter through the real receiver (``AlertReceiver.put``) on a real Redis, as ``POST
/api/alerts/alertmanager`` stores them; the sharded twin runs in-process as in ``tests/twin/test_resume.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import redis

from actors.twin.alerts import SEEN_MAX, AlertTracker
from actors.twin.eventlog import RedisEventLog
from actors.twin.model import TwinModel
from actors.twin.shard_service import TwinCoordinator, TwinShard
from actors.twin.shards import ShardedTwin, partition
from actors.twin.state import load, pack
from cluster.actuators.feedback import MergedSource
from cluster.telemetry.alerts import AlertSource, alert_sample, gpu_of, node_of
from cluster.telemetry.samples import AlertSample, GpuSample, parse_sample
from serving.alerts import AlertmanagerWebhook, AlertReceiver, InboxAlert, inbox_key
from tests.serving.test_alerts import PAYLOAD

pytestmark = [pytest.mark.timeout(120)]
NS = "al"
T0 = 1_700_000_000.0


def hook(**alert: Any) -> AlertmanagerWebhook:
    """The documented payload with its first alert changed (and only that alert)."""
    body = copy.deepcopy(PAYLOAD)
    body["alerts"] = [{**body["alerts"][0], **alert}]
    return AlertmanagerWebhook.model_validate(body)


def sample(received_at: float = T0 + 100, **alert: Any) -> AlertSample:
    h = hook(**alert)
    return alert_sample(InboxAlert.of(h, h.alerts[0], received_at))


# --- which node and GPU the labels name ---------------------------------------------------------------------------
@pytest.mark.parametrize(("labels", "node"), [
    ({"node": "n01", "Hostname": "DGX-01", "instance": "10.0.0.1:9400"}, "n01"),
    ({"Hostname": "DGX-01", "instance": "10.0.0.1:9400"}, "DGX-01"),
    ({"instance": "ip-10-0-1-23.ec2.internal:9400"}, "ip-10-0-1-23.ec2.internal"),
    ({"instance": "dgx-02"}, "dgx-02"),
    ({"instance": "[fd00::1]:9400"}, None),  # an IPv6 address is no host name
    ({"node": "not a host", "instance": "gpu-07:9100"}, "gpu-07"),  # an invalid label is skipped
    ({"instance": "https://server.example.org"}, None),
    ({}, None),
])
def test_the_node_comes_from_node_hostname_or_instance(labels: dict[str, str], node: str | None) -> None:
    assert node_of(labels) == node


def test_the_gpu_comes_from_its_index_label() -> None:
    assert [gpu_of({"gpu": v}) for v in ("3", "gpu7", "x", "256", "")] == [3, 7, None, None, None]
    s = sample(labels={"alertname": "XidSeen", "gpu": "2"})  # a GPU without a node names nothing
    assert (s.node, s.gpu, s.subject) == (None, None, "XidSeen")


def test_a_stored_alert_becomes_a_sample() -> None:
    s = sample()
    assert (s.kind, s.ts, s.alertname, s.status, s.severity) == ("alert", T0 + 100, "GpuTooHot", "firing", "critical")
    assert (s.node, s.gpu, s.subject) == ("DGX-01", 3, "DGX-01/gpu3")
    assert s.starts_at == pytest.approx(T0 + 0.123456) and s.ends_at is None
    assert s.summary == "GPU 3 on DGX-01 is at 88 C" and s.fingerprint == "1a30ba71cca2921f"
    assert parse_sample(s.model_dump(mode="json")) == s, "a sample of the trace format (intents, replays)"


# --- the source ----------------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_the_source_reads_each_alert_once_and_resumes_where_it_was(redis_url: str) -> None:
    rx = AlertReceiver(redis_url, NS, "t" * 16, clock=lambda: T0 + 100)
    await rx.put(AlertmanagerWebhook.model_validate(PAYLOAD))
    src = AlertSource(redis_url, NS)
    first = await src.read()
    assert [(s.subject, s.status) for s in first] == [("DGX-01/gpu3", "firing"),
                                                       ("ip-10-0-1-24.ec2.internal/gpu0", "resolved")]
    assert await src.read() == []
    assert await AlertSource(redis_url, NS).read() == [], "a restarted source goes on from the stored position"
    at = src.position()
    await rx.put(hook(fingerprint="00000000000000aa"))
    again = AlertSource(redis_url, NS)
    again.seek(at)  # a redone tick reads the same alerts again
    assert [s.fingerprint for s in await again.read()] == ["00000000000000aa"]
    redo = AlertSource(redis_url, NS)
    redo.seek(at)
    assert [s.fingerprint for s in await redo.read()] == ["00000000000000aa"]
    with pytest.raises(ValueError):
        redo.seek("not-a-position")


@pytest.mark.anyio
async def test_a_bad_inbox_entry_is_skipped_and_counted(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xadd(inbox_key(NS), {"alert": b"{not json"})
    r.xadd(inbox_key(NS), {"other": b"1"})
    await AlertReceiver(redis_url, NS, "t" * 16).put(hook())
    src = AlertSource(redis_url, NS)
    assert [s.alertname for s in await src.read()] == ["GpuTooHot"]
    assert dict(src.validator.rejected["alertmanager"]) == {"invalid": 1, "missing_field": 1}


# --- the twin's events -----------------------------------------------------------------------------------------------
def test_firing_and_resolved_become_events_on_the_gpu() -> None:
    twin = TwinModel()
    [fire] = twin.ingest([sample()])
    assert (fire.kind, fire.subject, fire.severity) == ("alert_firing", "DGX-01/gpu3", "critical")
    assert fire.ts == pytest.approx(T0 + 0.123) and fire.data["received_at"] == T0 + 100
    assert fire.data["node"] == "DGX-01" and fire.data["gpu"] == "DGX-01/gpu3" and fire.data["alertname"] == "GpuTooHot"
    assert fire.data["labels"]["modelName"] == "NVIDIA H100 80GB HBM3"  # type: ignore[index]
    [done] = twin.ingest([sample(T0 + 900, status="resolved", endsAt="2023-11-14T22:28:20Z")])
    assert (done.kind, done.subject, done.severity, done.ts) == ("alert_resolved", "DGX-01/gpu3", "info", T0 + 900)
    assert twin.now == 0.0, "alerts run on the receiver's clock: they move no twin time"


def test_a_resent_notification_is_one_event_with_one_id() -> None:
    twin = TwinModel()
    events = twin.ingest([sample(T0 + 100), sample(T0 + 160), sample(T0 + 400)])  # group flushes and repeats
    assert len(events) == 1
    forgot = TwinModel().ingest([sample(T0 + 4000)])  # a twin that forgot it still writes the same event
    assert [e.event_id for e in forgot] == [events[0].event_id] and forgot[0].to_json() != events[0].to_json()
    restart = twin.ingest([sample(T0 + 500, startsAt="2023-11-15T08:00:00Z")])  # fired again: a new alert
    assert len(restart) == 1 and restart[0].event_id != events[0].event_id
    resolved = twin.ingest([sample(status="resolved", endsAt="2023-11-14T23:00:00Z")] * 2)
    assert [e.kind for e in resolved] == ["alert_resolved"]


def test_what_the_twin_has_seen_is_kept_in_its_checkpoint_and_bounded() -> None:
    twin = TwinModel()
    twin.ingest([sample()])
    raw = pack("test", {"model": twin.to_state()})
    again = load(raw, "test", "k", lambda d: TwinModel.from_state(d["model"]))
    assert again.ingest([sample(T0 + 200)]) == [], "a restored twin does not repeat an alert"
    old = twin.to_state()
    del old["alerts"]
    assert TwinModel.from_state(old).alerts.seen == {}, "a checkpoint from before alerts still loads"
    tracker = AlertTracker(limit=3)
    for k in range(5):
        tracker.ingest(sample(fingerprint=f"{k:016x}"))
    assert len(tracker.seen) == 3 and SEEN_MAX >= 1000


def test_in_the_sharded_twin_an_alert_is_fleet_level() -> None:
    twin = ShardedTwin(partition(["DGX-01", "n02"], 2))
    gpu = GpuSample(ts=T0, node="DGX-01", gpu=3, temp_c=50.0, power_w=300.0)
    per, fleet = twin.route([gpu, sample()])
    assert per["s01"] == [gpu] and per["s02"] == [] and [s.kind for s in fleet] == ["alert"]
    assert [e.kind for e in twin.ingest([gpu, sample()])] == ["alert_firing"]


class FailOnce:
    """A shard that fails its first call: the coordinator has read (and written its intent), but not committed."""

    def __init__(self, shard: TwinShard, failures: list[int]) -> None:
        self.shard, self.failures = shard, failures

    async def work(self, tick: int, samples: list) -> Any:
        if self.failures:
            self.failures.pop()
            raise ConnectionError("shard died")
        return await self.shard.work(tick, samples)

    async def snapshot(self) -> dict:
        return await self.shard.snapshot()

    async def topology(self) -> dict:
        return await self.shard.topology()


@pytest.mark.anyio
async def test_the_sharded_twin_loses_no_alert_and_repeats_none_across_restarts(redis_url: str) -> None:
    layout = partition(["DGX-01"], 1)
    failures = [1]

    def coordinator() -> TwinCoordinator:  # as a restarted actor gets it: a fresh source, state from Redis
        def spawn(shard: str) -> Any:
            return FailOnce(TwinShard(shard, layout[shard], redis_url=redis_url, namespace=NS), failures)

        return TwinCoordinator(MergedSource(AlertSource(redis_url, NS)), spawn, layout, redis_url, NS)

    rx = AlertReceiver(redis_url, NS, "t" * 16, clock=lambda: T0 + 100)
    await rx.put(AlertmanagerWebhook.model_validate(PAYLOAD))
    first = coordinator()
    with pytest.raises(RuntimeError):
        await first.step()  # read, intent written, then the shard died: nothing committed
    assert await RedisEventLog(redis.asyncio.Redis.from_url(redis_url), f"{NS}:events").length() == 0
    assert await coordinator().step() == 2, "the restarted coordinator redoes the tick with the same alerts"
    rx.clock = lambda: T0 + 160
    await rx.put(AlertmanagerWebhook.model_validate(PAYLOAD))  # Alertmanager re-sends the group
    await rx.put(hook(status="resolved", endsAt="2023-11-14T22:30:00Z"))
    later = coordinator()
    for _ in range(3):
        await later.step()
    got = sorted((e.kind, e.subject) for e in await later.log.recent(50))
    assert got == [("alert_firing", "DGX-01/gpu3"), ("alert_resolved", "DGX-01/gpu3"),
                   ("alert_resolved", "ip-10-0-1-24.ec2.internal/gpu0")], got
