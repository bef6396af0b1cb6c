"""Link health beside bandwidth (#17 item 4): symbol errors, a port trained below nominal, flaps."""

from __future__ import annotations

from actors.twin.model import TwinModel
from actors.twin.network import FLAP_WINDOW_S, SYMBOL_ERRORS_PER_MIN, NetworkModel
from cluster.telemetry.samples import JobSample, LinkSample

LINK = "n01-n02/ib0"


def sample(ts: float, **health: float) -> LinkSample:
    return LinkSample(kind="link", ts=ts, link=LINK, type="ib", bandwidth_gbps=390.0, **health)  # type: ignore[arg-type]


def run(readings: list[dict], net: NetworkModel | None = None) -> list:
    net = net or NetworkModel()
    return [e for k, h in enumerate(readings) for e in net.ingest(sample(float(k), **h), [], {})]  # type: ignore[arg-type]


def test_symbol_errors_over_the_line_within_a_minute_raise_one_event_and_a_slow_trickle_none() -> None:
    # a slow trickle: 8 errors a minute, for ten minutes
    assert run([{"symbol_errors": 8 * k // 60} for k in range(600)]) == []
    # 12 a minute: over the line once a minute of them has been seen, one event for the episode
    events = run([{"symbol_errors": 12 * k // 60} for k in range(600)])
    assert [(e.kind, e.data["reason"]) for e in events] == [("link_degraded", "symbol_errors")]
    assert events[0].data["symbol_errors_last_min"] > SYMBOL_ERRORS_PER_MIN and 55 <= events[0].ts <= 60


def test_errors_that_stop_clear_the_episode_and_a_cleared_counter_is_not_a_burst() -> None:
    net = NetworkModel()
    burst = [{"symbol_errors": 30 * k} for k in range(5)]  # 30 a second
    quiet = [{"symbol_errors": 120}] * 120
    assert len(run(burst + quiet + burst, net)) == 2  # cleared after a quiet minute: a new burst is a new event
    assert run([{"symbol_errors": 500}, {"symbol_errors": 0}, {"symbol_errors": 3}]) == []


def test_a_port_trained_below_its_width_or_rate_is_downtrained_at_once() -> None:
    nominal = {"width_nominal": 4, "lane_gbps_nominal": 100.0}
    healthy = [{"width": 4, "lane_gbps": 100.0, **nominal}] * 5
    assert run(healthy) == []
    events = run(healthy + [{"width": 1, "lane_gbps": 100.0, **nominal}] * 5)
    assert [e.data["reason"] for e in events] == ["downtrained"] and events[0].ts == 5.0
    assert events[0].data["width"] == 1 and events[0].data["width_nominal"] == 4
    assert [e.data["reason"] for e in run([{"width": 4, "lane_gbps": 50.0, **nominal}])] == ["downtrained"]


def test_two_downs_within_the_window_are_flapping_one_is_not() -> None:
    one = [{"downed": 3}] * 10 + [{"downed": 4}] * 10
    assert run(one) == []
    apart = [{"downed": 3}] * 5 + [{"downed": 4}] + [{"downed": 4}] * int(FLAP_WINDOW_S) + [{"downed": 5}]
    assert run(apart) == []  # the first down left the window before the second
    events = run([{"downed": 3}] * 5 + [{"downed": 4}] * 30 + [{"downed": 5}] * 5)
    assert [(e.data["reason"], e.data["flaps"], e.ts) for e in events] == [("flapping", 2, 35.0)]


def test_the_event_names_the_jobs_crossing_the_link_and_survives_a_checkpoint() -> None:
    twin = TwinModel()
    gpus = tuple(f"n0{n}/gpu{g}" for n in (1, 2) for g in range(2))
    twin.ingest([JobSample(kind="job", ts=0.0, job="j1", gpus=gpus, step_ms=100.0)])
    twin.ingest([sample(float(k), downed=k // 3) for k in range(1, 4)])  # the first down at ts 3
    restored = TwinModel.from_state(twin.to_state())
    events = restored.ingest([sample(4.0, downed=1), sample(5.0, downed=2)])
    assert [(e.kind, e.data["reason"], e.data["jobs"], e.data["gpus_affected"]) for e in events] == [
        ("link_degraded", "flapping", ["j1"], 4)]
