"""The detectors read a read-only frame of the round's data, never the GPU model itself (issue #14 item 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from actors.twin.model import TwinModel
from actors.twin.physics import Topology
from cluster.telemetry.sim import Simulator


def test_the_frame_shows_the_round_and_cannot_write_the_model() -> None:
    sim, twin = Simulator(Topology.build(1, 4)), TwinModel()
    for _ in range(5):
        twin.ingest(sim.step())
    frame = twin.frame()
    assert np.array_equal(frame.latest, twin.latest, equal_nan=True) and frame.names == twin.names
    assert np.array_equal(frame.true_c, twin.est.x[:, 1]) and frame.describe(0)["gpu"] == twin.names[0]
    for arr in (frame.latest, frame.latest_t, frame.power_w, frame.clock_mhz, frame.slowdown_c, frame.sensor_c,
                frame.true_c):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0.0
    twin.ingest(sim.step())  # the model itself still writes its arrays
    assert twin.latest.flags.writeable


def test_signals_does_not_import_the_model() -> None:
    tree = ast.parse((Path(__file__).resolve().parents[2] / "actors/twin/signals.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "actors.twin.model" not in imported
