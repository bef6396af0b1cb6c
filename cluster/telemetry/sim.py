"""The simulator: a data center made of the twin's own physics, with faults on a schedule.

``Simulator`` is pure (no clock, no IO): each ``step`` advances the physics by one tick and returns the
samples a real fleet's telemetry would report, sensor noise included. ``apply`` is the simulated actuator.
``SimulatorService`` paces it against the wall clock and keeps its state in Redis, because a data center
does not restart when opsloop does.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any, Literal

import numpy as np
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from actors.twin.physics import FleetPhysics, Topology
from cluster.telemetry.samples import ActionResult, CoolingSample, GpuSample, JobSample, LinkSample, Sample
from policies.actions import Action, action_targets, describe, parse_action

log = logging.getLogger("opsloop.sim")
#: Version of ``Simulator.state_dict`` (JSON; a state without ``v`` is from before versions and loads as 1).
STATE_VERSION = 1

FaultKind = Literal[
    "cooling_degradation", "fan_failure", "power_limit", "supply_drift", "link_degradation", "xid", "stuck_sensor",
    "noisy_sensor",
]


class Fault(BaseModel):
    """A scheduled fault: ``kind`` hits ``target`` (a node, unit or GPU) at simulated second ``at_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    at_s: float = Field(ge=0)
    target: str
    value: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``KIND@T:TARGET[=VALUE]``, e.g. ``cooling_degradation@20:n01=0.5``."""
        try:
            kind, rest = spec.split("@", 1)
            at, target = rest.split(":", 1)
            value = None
            if "=" in target:
                target, v = target.split("=", 1)
                value = float(v)
            return cls(kind=kind, at_s=float(at), target=target, value=value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"bad fault {spec!r}: expected KIND@SECONDS:TARGET[=VALUE] ({exc})") from exc


class Simulator:
    """A simulated fleet that reports telemetry every tick and obeys actions."""

    def __init__(
        self,
        topo: Topology,
        faults: list[Fault] | None = None,
        seed: int = 7,
        sensor_tau_s: float = 15.0,
        noise_c: float = 0.3,
        tick_s: float = 1.0,
    ) -> None:
        self.topo = topo
        self.physics = FleetPhysics(topo, sensor_tau_s=sensor_tau_s)
        self.faults = sorted(faults or [], key=lambda f: (f.at_s, f.kind, f.target))
        for f in self.faults:
            links = [name for name, _ in topo.links]
            known = {"cooling_degradation": topo.nodes, "fan_failure": topo.units, "supply_drift": topo.units,
                     "power_limit": topo.gpu_names, "link_degradation": links, "xid": topo.gpu_names,
                     "stuck_sensor": topo.gpu_names, "noisy_sensor": topo.gpu_names}[f.kind]
            if f.target not in known:
                raise ValueError(f"fault {f.kind}: unknown target {f.target!r} (known: {', '.join(known[:8])}…)")
        self.fired = 0
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.noise_c = noise_c
        self.tick_s = tick_s
        self.t = 0.0
        self.names = topo.gpu_names
        self._results: list[ActionResult] = []
        self._done: dict[str, ActionResult] = {}  # action_id -> result: executing twice is a no-op
        self.extra_noise = np.zeros(len(self.names))  # noisy_sensor faults add to the noise of one GPU
        self.stuck = np.full(len(self.names), np.nan)  # stuck_sensor faults freeze a reading
        self.pending_xid: dict[int, int] = {}

    def step(self) -> list[Sample]:
        """Advance one tick; the samples of that instant, GPUs first, then cooling, then action results."""
        self.t = round(self.t + self.tick_s, 6)
        while self.fired < len(self.faults) and self.faults[self.fired].at_s <= self.t:
            self._inject(self.faults[self.fired])
            self.fired += 1
        p = self.physics
        p.step(self.tick_s)
        sigma = self.noise_c + self.extra_noise
        noisy = p.sensed_c + self.rng.normal(0.0, 1.0, p.sensed_c.shape) * sigma if sigma.any() else p.sensed_c
        noisy = np.clip(np.where(np.isnan(self.stuck), noisy, self.stuck), -20.0, 150.0)
        out: list[Sample] = []
        for i, name in enumerate(self.names):
            node, g = name.split("/gpu")
            out.append(
                GpuSample(
                    ts=self.t, node=node, gpu=int(g), temp_c=round(float(noisy[i]), 2),
                    power_w=round(float(p.power_w[i]), 1), power_limit_w=float(p.power_limit_w[i]),
                    sm_clock_mhz=round(float(p.clock_mhz[i])), util=float(p.util[i]),
                    throttle_reasons=p.throttle_reasons(i), xid=self.pending_xid.pop(i, None),
                )
            )
        for (name, kind), frac in zip(self.topo.links, p.link_frac, strict=True):
            nominal = {"nvlink": 7200.0, "pcie": 1024.0, "ib": 400.0}[kind]
            out.append(LinkSample(kind="link", ts=self.t, link=name, type=kind,  # type: ignore[arg-type]
                                  bandwidth_gbps=round(float(frac) * nominal, 1)))
        gpus_of_node = {n: [g for g in self.names if g.startswith(n + "/")] for n in self.topo.nodes}
        for j, (job, nodes) in enumerate(zip(self.topo.job_names, self.topo.jobs, strict=True)):
            gpus = tuple(g for k in nodes for g in gpus_of_node[self.topo.nodes[k]])
            out.append(JobSample(kind="job", ts=self.t, job=job, gpus=gpus, step_ms=round(float(p.step_ms[j]), 3)))
        for u, unit in enumerate(self.topo.units):
            served = self.topo.unit_nodes(unit)
            out.append(
                CoolingSample(
                    kind="cooling", ts=self.t, unit=unit, supply_c=round(float(p.supply_sensed_c[u]), 2),
                    return_c=round(float(p.return_sensed_c[u]), 2), setpoint_c=float(p.setpoint_c[u]),
                    fan_pct=float(p.fan_pct[u]), serves=tuple(served),
                    flow_frac={n: round(float(p.flow_frac[self.topo.nodes.index(n)]), 3) for n in served},
                )
            )
        out += self._results
        self._results = []
        return out

    def _inject(self, f: Fault) -> None:
        p, topo = self.physics, self.topo
        if f.kind == "cooling_degradation":
            p.flow_frac[topo.nodes.index(f.target)] = f.value if f.value is not None else 0.5
        elif f.kind == "fan_failure":
            p.fan_pct[topo.units.index(f.target)] = f.value if f.value is not None else 25.0
        elif f.kind == "supply_drift":  # the unit loses capacity: supply drifts VALUE °C above its setpoint
            p.capacity_loss_c[topo.units.index(f.target)] += f.value if f.value is not None else 8.0
        elif f.kind == "power_limit":
            p.power_limit_w[self.names.index(f.target)] = f.value if f.value is not None else 400.0
        elif f.kind == "link_degradation":
            p.link_frac[[n for n, _ in topo.links].index(f.target)] = f.value if f.value is not None else 0.25
        elif f.kind == "xid":
            self.pending_xid[self.names.index(f.target)] = int(f.value) if f.value is not None else 79
        elif f.kind == "stuck_sensor":
            i = self.names.index(f.target)
            self.stuck[i] = round(float(p.sensed_c[i]), 2)
        elif f.kind == "noisy_sensor":
            self.extra_noise[self.names.index(f.target)] = f.value if f.value is not None else 5.0

    def apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None = None) -> ActionResult:
        """Execute an action on the simulated fleet (idempotent by ``action_id``); the result is also reported
        as telemetry on the next tick, which is how the twin learns of it."""
        if action_id in self._done:
            return self._done[action_id]
        p, topo = self.physics, self.topo
        status, detail = "executed", describe(action)
        previous: dict[str, float | str] | None = None  # what an undo sets back
        try:
            if action.kind == "set_cooling_setpoint":
                u = topo.units.index(action.unit)
                detail = f"{action.unit} supply setpoint {p.setpoint_c[u]:.1f} -> {action.supply_c:.1f} °C"
                previous = {"supply_c": float(p.setpoint_c[u])}
                p.setpoint_c[u] = action.supply_c
            elif action.kind == "set_fan_speed":
                u = topo.units.index(action.unit)
                detail = f"{action.unit} fans {p.fan_pct[u]:.0f} -> {action.percent:.0f} %"
                previous = {"percent": float(p.fan_pct[u])}
                p.fan_pct[u] = action.percent
            elif action.kind == "set_power_limit":
                i = self.names.index(action.gpu)
                detail = f"{action.gpu} power limit {p.power_limit_w[i]:.0f} -> {action.watts:.0f} W"
                previous = {"watts": float(p.power_limit_w[i])}
                p.power_limit_w[i] = min(action.watts, p.tdp_w[i])
            elif action.kind == "reset_gpu":  # also brings back a GPU its thermal shutdown took off the bus
                p.reset(self.names.index(action.gpu))
            elif action.kind == "cordon_gpu":
                i = self.names.index(action.gpu)
                p.util[i] = p.lost_util[i] = 0.0
                p.thermal_cap_mhz[i] = p.f_max[i]
            elif action.kind == "drain_node":
                n = topo.nodes.index(action.node)
                p.util[p.gpu_node == n] = 0.0
        except ValueError:
            status, detail = "failed", f"unknown target in {describe(action)}"
        result = ActionResult(
            ts=self.t, action_id=action_id, approval_id=approval_id, action_kind=action.kind,
            targets=tuple(action_targets(action)), status=status, detail=detail, traceparent=traceparent,
            previous=previous if status == "executed" else None,
        )
        self._done[action_id] = result
        self._results.append(result)
        return result

    # --- persistence --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (JSON-able)."""
        return {
            "v": STATE_VERSION, "t": self.t, "fired": self.fired, "physics": self.physics.state_dict(),
            "rng": self.rng.bit_generator.state, "done": {k: v.model_dump(mode="json") for k, v in self._done.items()},
            # sensor faults already injected (a fired fault is not injected again after a restart)
            "extra_noise": self.extra_noise.tolist(), "stuck": [None if np.isnan(v) else float(v) for v in self.stuck],
            "pending_xid": {str(i): x for i, x in self.pending_xid.items()},
            "results": [r.model_dump(mode="json") for r in self._results],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict``.

        Raises:
            ValueError: another version (a wrong field, type or shape raises ``KeyError``/``TypeError``/...).
        """
        if not isinstance(state, dict) or state.get("v", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"not a simulator state of version {STATE_VERSION}")
        self.physics.load_state(state["physics"])
        self.t, self.fired = float(state["t"]), int(state["fired"])
        self.rng.bit_generator.state = state["rng"]
        self._done = {k: ActionResult.model_validate(v) for k, v in state.get("done", {}).items()}
        if "stuck" in state:  # saved before sensor faults were kept: they stay as a fresh start has them
            self.extra_noise = np.array(state["extra_noise"], dtype=float)
            self.stuck = np.array([np.nan if v is None else v for v in state["stuck"]], dtype=float)
            self.pending_xid = {int(i): int(x) for i, x in state["pending_xid"].items()}
            self._results = [ActionResult.model_validate(r) for r in state["results"]]


class SimulatorService:
    """The simulator paced by the wall clock (``speed`` simulated seconds per second), state kept in Redis.

    Thin shell: ``cluster/deploy.py`` makes it a Ray actor. ``read`` catches the simulation up to now.
    """

    def __init__(self, sim: Simulator, speed: float, redis_url: str | None = None, state_key: str = "") -> None:
        # A copy: arrays that arrive through Ray's object store are read-only views.
        self.sim = copy.deepcopy(sim)
        self.speed = speed
        self.state_key = state_key
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._resumed = self._redis is None
        self.refused: str | None = None  # why a stored state was refused, if one was
        self._t0_wall = time.monotonic()
        self._t0_sim = self.sim.t

    async def _resume(self) -> None:
        if not self._resumed:
            saved = await self._redis.get(self.state_key)  # type: ignore[union-attr]
            if saved:
                try:  # data, never code: JSON, validated; loaded into a copy so a bad state leaves nothing behind
                    trial = copy.deepcopy(self.sim)
                    trial.load_state(json.loads(saved))
                    self.sim = trial
                except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                    self.refused = f"{self.state_key}: {type(exc).__name__}: {exc}"
                    log.error("refusing the simulator's stored state %s; starting afresh", self.refused)
            self._t0_wall, self._t0_sim = time.monotonic(), self.sim.t
            self._resumed = True

    async def _save(self) -> None:
        if self._redis is not None:
            await self._redis.set(self.state_key, json.dumps(self.sim.state_dict()))

    async def read(self, max_steps: int = 600) -> list[Sample]:
        """Samples of every tick due by now (at most ``max_steps`` ticks per call, so a stall cannot flood)."""
        await self._resume()
        due = self._t0_sim + (time.monotonic() - self._t0_wall) * self.speed
        out: list[Sample] = []
        steps = 0
        while self.sim.t + self.sim.tick_s <= due and steps < max_steps:
            out += self.sim.step()
            steps += 1
        if steps == max_steps:  # fell behind: drop the backlog of time rather than the samples
            self._t0_wall, self._t0_sim = time.monotonic(), self.sim.t
        if steps:
            await self._save()
        return out

    async def apply(
        self, action: dict[str, Any], action_id: str, approval_id: str, traceparent: str | None = None
    ) -> dict:
        """Execute a (validated) action; returns the ``ActionResult`` as a dict."""
        await self._resume()
        result = self.sim.apply(parse_action(action), action_id, approval_id, traceparent)
        await self._save()
        return result.model_dump(mode="json")

    async def now(self) -> float:
        """Simulated time in seconds."""
        return self.sim.t

    async def truth(self) -> dict[str, Any]:
        """The simulator's ground truth (for tests and demos: what the sensors lag behind)."""
        p = self.sim.physics
        return {"t": self.sim.t, "gpus": self.sim.names, "temp_c": p.temp_c.tolist(), "sensed_c": p.sensed_c.tolist(),
                "setpoint_c": p.setpoint_c.tolist(), "supply_c": p.supply_c.tolist()}
