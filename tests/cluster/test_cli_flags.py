"""Settings flags (``cluster/cli/_flags.py``): each flag sets the settings field of its name, takes the field's
type and choices, and builds the settings of ``up``, ``deploy render`` and ``llm render`` without Ray."""

from __future__ import annotations

import argparse
import typing

import pytest

from cluster.cli import CliError, build_parser, main
from cluster.cli._flags import FLAGS, add_settings_flags, settings_from_args
from cluster.settings import Settings


def test_every_flag_sets_a_settings_field_of_its_own_type_and_choices() -> None:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, **dict.fromkeys(FLAGS))
    actions = {a.dest: a for a in parser._actions if a.dest in FLAGS}
    assert set(actions) == set(FLAGS) and set(FLAGS) <= set(Settings.model_fields)
    assert actions["llm_replicas"].option_strings == ["--replicas"] and actions["llm_replicas"].type is int
    assert actions["sim_speed"].type is float and actions["data_dir"].type is None
    assert list(actions["telemetry"].choices) == list(typing.get_args(Settings.model_fields["telemetry"].annotation))
    assert actions["dcgm_urls"].metavar == "URL" and isinstance(actions["dcgm_urls"], argparse._AppendAction)
    assert actions["gpu_nodes"].help == Settings.model_fields["gpu_nodes"].description, "no help: the description"


def test_the_commands_build_their_settings_from_the_flags_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSLOOP_ACCELERATOR", "L4")
    parser = build_parser()
    args = parser.parse_args(["llm", "render", "--replicas", "3", "--max-replicas", "5"])
    s = settings_from_args(args)
    assert (s.llm_replicas, s.llm_max_replicas, s.accelerator) == (3, 5, "L4"), "a flag not given: env decides"
    up = parser.parse_args(["up", "--nodes", "3", "--no-demo-fault", "--dcgm-url", "http://a:9400/metrics",
                            "--dcgm-url", "http://b:9400/metrics", "--telemetry", "dcgm", "--address", "auto"])
    s = settings_from_args(up)
    assert (s.sim_nodes, s.demo_fault, s.telemetry, s.ray_address) == (3, False, "dcgm", "auto")
    assert s.dcgm_urls == ["http://a:9400/metrics", "http://b:9400/metrics"] and s.actuator == "dry-run"
    deploy = parser.parse_args(["deploy", "render", "--out", "x", "--image", "img:1", "--gpu-nodes", "0"])
    assert (settings_from_args(deploy).deploy_image, settings_from_args(deploy).gpu_nodes) == ("img:1", 0)


def test_a_bad_setting_is_a_one_line_error_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "render", "--tensor-parallel-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("opsloop: error: invalid settings: tensor_parallel_size:") and "Traceback" not in err
    with pytest.raises(CliError) as exc:
        settings_from_args(build_parser().parse_args(["up", "--telemetry", "replay"]))
    assert exc.value.code == 2 and "replay_file" in str(exc.value)


def test_a_command_may_only_name_fields_with_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError, match="sensor_tau_s"):
        add_settings_flags(argparse.ArgumentParser(), sensor_tau_s=None)
    monkeypatch.setitem(FLAGS, "sensor_tau_s", ("--sensor-tau", {}))
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, sensor_tau_s=None)
    assert "(63 % of" in parser.format_help(), "a % in a description is text, not a format"
    assert settings_from_args(parser.parse_args(["--sensor-tau", "7.5"])).sensor_tau_s == 7.5
