"""The barrier experiment on a real local Ray, and the CLI's handling of bad flags."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from cluster.cli import main


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
    from actors.twin.barrier import parse_work
    from cluster.barrier_experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(workers=4, rounds=60, work=parse_work("exp:20"), straggler=2.0, seed=7)
    result = run_experiment(config).model_dump(mode="json")
    for key in ("workers", "rounds", "measured_round_ms", "theory_round_ms", "measured_wait_ms",
                "theory_wait_ms", "efficiency", "slowest_worker", "p99_wait_ms", "raw_round_ms", "overhead_ms"):
        assert key in result
    assert result["workers"] == 4 and result["rounds"] == 60 and result["straggler_worker"] == "w00"
    # Noise-tolerant: 60 rounds leave ~10 % sampling error and a loaded machine adds timer jitter.
    assert 0.7 < result["measured_round_ms"] / result["theory_round_ms"] < 1.6
    assert result["measured_round_ms"] > 0.8 * result["drawn_round_ms"]  # nobody finishes before their draw
    assert 0.5 * result["theory_wait_ms"] < result["measured_wait_ms"] < 2.0 * result["theory_wait_ms"]
    assert 0 < result["efficiency"] <= 1
    assert result["raw_round_ms"] >= result["measured_round_ms"] and result["overhead_ms"] > 0
    assert result["slowest_worker"] in {f"w{i:02d}" for i in range(4)}
