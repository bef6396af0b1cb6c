"""Data quality and the replay CLI: bad lines quarantined with a reason, good lines processed, same bytes twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.telemetry.quality import Quarantined, Validator


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "not_an_object"),
        ('{"ts": 1, "node": "n01", "gpu": 0, "temp_c": NaN}', "nan"),
        ('{"ts": 1, "node": "n01", "gpu": 0, "temp_c": 400}', "out_of_range"),
        ('{"ts": 1, "node": "n01", "gpu": "zero", "temp_c": 50}', "wrong_type"),
        ('{"ts": 1, "node": "n01", "gpu": 0}', "missing_field"),
        ('{"ts": 1, "node": "n01", "gpu": 0, "temp_c": 50, "colour": "red"}', "unknown_field"),
        ('{"kind": "teleport", "ts": 1}', "unknown_kind"),
    ],
)
def test_bad_records_are_quarantined_with_a_reason(line: str, reason: str) -> None:
    v = Validator()
    got = v.check_line("t", 1, line)
    assert isinstance(got, Quarantined) and got.reason == reason
    assert v.summary()["t"]["by_reason"] == {reason: 1}


def test_duplicate_backwards_and_stuck_readings() -> None:
    v = Validator(stuck_after=4, stuck_grace=0)
    rec = lambda ts, t: {"ts": ts, "node": "n01", "gpu": 0, "temp_c": t}  # noqa: E731
    assert not isinstance(v.check("s", 1, rec(1, 50.0)), Quarantined)
    assert v.check("s", 2, rec(1, 50.1)).reason == "duplicate_ts"
    assert v.check("s", 3, rec(0.5, 50.1)).reason == "backwards_ts"
    # A sensor with a resolution finer than a degree never repeats a reading: 4 repeats are stuck.
    results = [v.check("s", 4 + k, rec(2 + k, 50.25)) for k in range(4)]
    assert [isinstance(r, Quarantined) for r in results] == [False, False, False, True]
    assert not isinstance(v.check("s", 9, rec(30, 51.0)), Quarantined)
    assert v.summary()["s"]["gaps"] == 1


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    out = tmp_path / "t.jsonl"
    rc = main(["twin", "simulate", "--nodes", "2", "--gpus-per-node", "2", "--seconds", "150", "--job-nodes", "2",
               "--fault", "cooling_degradation@10:n01=0.5", "--fault", "link_degradation@60:n01-n02/ib0=0.3",
               "--out", str(out)])
    assert rc == 0
    return out


def _replay(path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cluster", "twin", "replay", str(path), "--json", "--sensor-tau", "15"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_replay_is_deterministic_and_survives_corruption(trace: Path, tmp_path: Path) -> None:
    a, b = _replay(trace), _replay(trace)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout
    events = [json.loads(x) for x in a.stdout.splitlines()]
    assert all({"event_id", "ts", "kind", "subject", "severity", "data"} <= set(e) for e in events)
    kinds = {e["kind"] for e in events}
    assert {"thermal_slowdown_predicted", "cooling_degraded", "network_bottleneck"} <= kinds
    assert any(e["subject"] == "n01/gpu1" for e in events)
    lines = trace.read_text().splitlines()
    g = next(k for k in range(40, 80) if '"temp_c"' in lines[k])
    bad = {7: "{oops", g: lines[g].replace('"temp_c":', '"temp_c":"hot","x":'), 90: lines[89], 120: "[]"}
    for k, text in bad.items():
        lines[k] = text
    corrupt = tmp_path / "c.jsonl"
    corrupt.write_text("\n".join(lines) + "\n")
    c = _replay(corrupt)
    assert c.returncode == 0
    assert c.stderr.count("quarantined line") == len(bad)
    for k in bad:
        assert f"quarantined line {k + 1}:" in c.stderr
    assert f"{len(lines) - len(bad)} samples accepted" in c.stderr


def test_help_explains() -> None:
    out = subprocess.run([sys.executable, "-m", "cluster", "twin", "replay", "--help"], capture_output=True, text=True)
    assert "quarantined" in out.stdout and "--sensor-tau" in out.stdout
