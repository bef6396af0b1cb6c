"""The barrier experiment on a real local Ray, and the ``opsloop barrier`` flags: their parsing and bad values."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from actors.twin.barrier_theory import WorkDist
from cluster.cli import main
from cluster.cli.barrier import parse_straggler, parse_work


def test_work_specs_parse_to_distributions() -> None:
    assert parse_work("exp:20") == WorkDist(kind="exp", ms=20)
    assert parse_work(" LogNormal:20:0.5 ") == WorkDist(kind="lognormal", ms=20, sigma=0.5)
    assert parse_work("const:0") == WorkDist(kind="const", ms=0)
    assert parse_work("lognormal:2e1:.5").spec == "lognormal:20:0.5"


@pytest.mark.parametrize("spec", ["exp:-1", "foo:3", "exp", "exp:1:2", "lognormal:20", "lognormal:20:0",
                                  "exp:0", "exp:abc", "const:-2", "exp:inf"])
def test_bad_work_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"work (spec|distribution)|finite"):
        parse_work(spec)


def test_straggler_parsing() -> None:
    assert parse_straggler("3x") == 3.0 and parse_straggler("2.5X") == 2.5 and parse_straggler("3") == 3.0
    for bad in ("x3", "0x", "-2x", "fast", "3xx", "nanx"):
        with pytest.raises(ValueError, match="bad straggler"):
            parse_straggler(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--work", "exp:-1"], "bad work spec 'exp:-1'"),
        (["--work", "foo:3"], "unknown work distribution 'foo'"),
        (["--straggler", "x3"], "bad straggler 'x3'"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["barrier", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("opsloop: error: ") and message in err and "\n" not in err


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    temp_dir = tempfile.mkdtemp(prefix="olt-", dir="/tmp")  # short: Unix socket paths are limited
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp_dir)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.timeout(300)
def test_small_experiment_json_shape_and_theory(local_ray: None) -> None:
    from actors.twin.barrier_theory import theory
    from cluster.barrier_experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(workers=4, rounds=60, work=WorkDist(kind="exp", ms=20), straggler=2.0, seed=7)
    result = run_experiment(config).model_dump(mode="json")
    for key in ("workers", "rounds", "measured_round_ms", "theory", "measured_wait_ms",
                "efficiency", "slowest_worker", "p99_wait_ms", "raw_round_ms", "overhead_ms"):
        assert key in result
    assert result["workers"] == 4 and result["rounds"] == 60 and result["straggler_worker"] == "w00"
    expected = result["theory"]
    assert expected == theory(config.work, 4, 2.0).model_dump(mode="json")  # the typed record, whole
    # Noise-tolerant: 60 rounds leave ~10 % sampling error and a loaded machine adds timer jitter.
    assert 0.7 < result["measured_round_ms"] / expected["round_ms"] < 1.6
    assert result["ratio"] == pytest.approx(result["measured_round_ms"] / expected["round_ms"])
    assert result["measured_round_ms"] > 0.8 * result["drawn_round_ms"]  # nobody finishes before their draw
    assert 0.5 * expected["wait_ms"] < result["measured_wait_ms"] < 2.0 * expected["wait_ms"]
    assert 0 < result["efficiency"] <= 1
    assert result["raw_round_ms"] >= result["measured_round_ms"] and result["overhead_ms"] > 0
    assert result["slowest_worker"] in {f"w{i:02d}" for i in range(4)}


def test_table_sets_each_measurement_beside_its_theory() -> None:
    from actors.twin.barrier_theory import theory
    from cluster.barrier_experiment import ExperimentResult
    from cluster.cli.barrier import table

    expected = theory(WorkDist(kind="exp", ms=20), 8)
    row = ExperimentResult(
        workers=8, rounds=230, work="exp:20", straggler=1.0, straggler_worker=None, seed=0, work_mode="sleep",
        measured_round_ms=57.5, stderr_round_ms=1.0, p99_round_ms=120.0, theory=expected,
        ratio=57.5 / expected.round_ms, drawn_round_ms=54.0, raw_round_ms=66.0, raw_ratio=66.0 / expected.round_ms,
        overhead_ms=8.5, lead_ms=6.0, tail_ms=2.5, dispatch_ms=4.0, zero_work_round_ms=9.0, late_starts=0,
        driver_round_ms=68.0, measured_wait_ms=36.0, p99_wait_ms=90.0, mean_round_p99_wait_ms=70.0,
        efficiency=0.37, slowest_worker="w03", slowest_share=0.14, elapsed_s=15.0,
    ).model_dump(mode="json")
    line = table([row]).splitlines()[2].split()
    assert line[:7] == ["8", "230", "57.5", f"{expected.round_ms:.1f}", f"{57.5 / expected.round_ms:.2f}",
                        "36.0", f"{expected.wait_ms:.1f}"]
    assert line[8:10] == ["0.37", f"{expected.efficiency:.2f}"]
