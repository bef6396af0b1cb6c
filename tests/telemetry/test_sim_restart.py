"""The simulator carries on after a restart as if it never stopped: faults already fired stay in force."""

from __future__ import annotations

import json

from actors.twin.physics import Topology
from cluster.telemetry.sim import Fault, Simulator
from policies.actions import parse_action

FAULTS = ["stuck_sensor@5:n01/gpu1", "noisy_sensor@6:n02/gpu0=4", "xid@12:n01/gpu3=79",
          "cooling_degradation@8:n01=0.5"]


def sim() -> Simulator:
    return Simulator(Topology.build(2, 4), [Fault.parse(f) for f in FAULTS], seed=3)


def test_restart_keeps_sensor_faults_pending_xids_and_results() -> None:
    ref = sim()
    for _ in range(12):
        ref.step()
    ref.apply(parse_action({"kind": "set_cooling_setpoint", "unit": "cu01", "supply_c": 18.0}), "a1", "ap1")
    saved = json.loads(json.dumps(ref.state_dict()))  # what Redis keeps
    again = sim()
    again.load_state(saved)
    for _ in range(20):
        want, got = ref.step(), again.step()
        assert [s.model_dump() for s in got] == [s.model_dump() for s in want]
    stuck = [s.temp_c for s in again.step() if getattr(s, "node", None) == "n01" and getattr(s, "gpu", None) == 1]
    assert stuck == [float(saved["stuck"][1])], "the stuck sensor froze at its reading before the restart"


def test_an_older_state_without_sensor_faults_still_loads() -> None:
    ref = sim()
    for _ in range(3):
        ref.step()
    old = {k: v for k, v in ref.state_dict().items() if k not in ("extra_noise", "stuck", "pending_xid", "results")}
    again = sim()
    again.load_state(json.loads(json.dumps(old)))
    assert again.t == ref.t
