"""Early warning of thermal slowdown on held-out, physics-consistent traces (issue #17 item 1's acceptance).

Each seed gives one trace per class from ``tests/twin/traces.py`` (made without the twin: each GPU draws its own
R, τ_d, sensor lag τ_s 8–20 s and dead time; even seeds report whole degrees). Every trace is one GPU on its own
node and cooling unit; all of them go through one :class:`~actors.twin.model.TwinModel` together, a tick at a time,
as GpuSamples (temperature and power) and CoolingSamples (the unit's supply every 5 s).

Prints: the share of warnings before the die's own (true) crossing, the median and p10 lead, crossing traces
missed, false alarms by class (a ``thermal_slowdown_predicted`` on a trace whose die never crosses, or on a
crossing trace before its event starts, during the ordinary work every trace begins with) and per GPU-day, and
``sensor_fault`` events by class and resolution.
Usage: ``python bench/early_warning.py [--seeds 9000:9100] [--warn-p 0.3,0.5,0.7]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

from actors.twin.model import Thresholds, TwinModel
from cluster.telemetry.samples import parse_sample
from tests.twin.traces import KINDS, Trace, make_trace


@dataclass
class Outcome:
    """What the twin said about one trace."""

    trace: Trace
    warned_ts: list[float] = field(default_factory=list)
    eta_s: list[float | None] = field(default_factory=list)
    sensor_faults: int = 0

    def event_warnings(self) -> list[float]:
        """Warnings once the trace's event started (the crossing's warning is the first of them)."""
        return [w for w in self.warned_ts if w >= self.trace.t0] if self.trace.cross_ts is not None else []

    def false_warnings(self) -> list[float]:
        """Warnings on a die that did not cross: any on a quiet trace, and a crossing trace's before its event."""
        return [w for w in self.warned_ts if w not in self.event_warnings()]


def run(traces: list[Trace], model: TwinModel | None = None) -> list[Outcome]:
    """Feed every trace (GPU k on node ``n{k}`` cooled by unit ``cu{k}``) through one twin, in time order."""
    model = model or TwinModel()
    out = [Outcome(tr) for tr in traces]
    stream = []
    for k, tr in enumerate(traces):
        stream += [(ts, 0 if rec["kind"] == "cooling" else 1, k, rec)
                   for ts, rec in tr.samples(f"n{k:04d}", 0, f"cu{k:04d}")]
    stream.sort(key=lambda e: (e[0], e[1], e[2]))
    by_name = {f"n{k:04d}/gpu0": k for k in range(len(traces))}
    samples = [parse_sample(e[3]) for e in stream]
    times = np.array([e[0] for e in stream])
    cuts = np.nonzero(np.diff(times))[0] + 1  # one batch per timestamp
    for batch in np.split(np.arange(len(samples)), cuts):
        for ev in model.ingest([samples[j] for j in batch]):
            k = by_name.get(ev.subject)
            if k is None:
                continue
            if ev.kind == "thermal_slowdown_predicted":
                out[k].warned_ts.append(ev.ts)
                out[k].eta_s.append(ev.data.get("eta_s"))
            elif ev.kind == "sensor_fault":
                out[k].sensor_faults += 1
    return out


def traces_for(seeds: range) -> list[Trace]:
    """One trace of each class per seed."""
    return [make_trace(s, kind) for s in seeds for kind in KINDS]


def figures(outcomes: list[Outcome]) -> dict:
    """The acceptance figures: leads against the true crossing, misses, false alarms and sensor faults."""
    crossing = [o for o in outcomes if o.trace.cross_ts is not None]
    leads = np.array([o.trace.cross_ts - w[0] for o in crossing if (w := o.event_warnings())])
    by_class: dict[str, dict] = {}
    for kind in KINDS:
        cls = [o for o in outcomes if o.trace.kind == kind]
        by_class[kind] = {"traces": len(cls), "false_alarms": sum(bool(o.false_warnings()) for o in cls)}
    hours = sum(o.trace.ts[-1] - o.trace.ts[0] for o in outcomes) / 3600
    faults = {f"{kind} {'whole' if whole else 'fine'}": sum(o.sensor_faults for o in outcomes
                                                          if o.trace.kind == kind and o.trace.whole == whole)
              for kind in KINDS for whole in (True, False)}
    return {
        "crossing_traces": len(crossing),
        "warned": len(leads),
        "missed": len(crossing) - len(leads),
        "before_crossing_share": float((leads > 0).mean()) if len(leads) else 0.0,
        "median_lead_s": float(np.median(leads)) if len(leads) else float("nan"),
        "p10_lead_s": float(np.percentile(leads, 10)) if len(leads) else float("nan"),
        "false_alarms": by_class,  # traces with a warning when their die was not about to cross
        "gpu_hours": hours,
        "false_alarms_per_gpu_day": 24 * sum(len(o.false_warnings()) for o in outcomes) / hours,
        "sensor_faults": faults,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="9000:9100", help="seed range lo:hi (one trace of each class per seed)")
    ap.add_argument("--warn-p", default=str(Thresholds.warn_p),
                    help="comma-separated p* values to compare (default: the twin's own)")
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.seeds.split(":"))
    t0 = time.perf_counter()
    traces = traces_for(range(lo, hi))
    print(f"seeds {lo}:{hi}: {len(traces)} traces ({time.perf_counter() - t0:.1f} s to generate)")
    for p in (float(x) for x in a.warn_p.split(",")):
        t1 = time.perf_counter()
        f = figures(run(traces, TwinModel(thresholds=Thresholds(warn_p=p))))
        print(f"p* = {p}: {time.perf_counter() - t1:.1f} s through the twin")
        report(f)


def report(f: dict) -> None:
    """The figures in words."""
    print(f"crossing traces {f['crossing_traces']}: warned {f['warned']}, missed {f['missed']}; "
          f"warned before the die's crossing {100 * f['before_crossing_share']:.1f} %; "
          f"lead median {f['median_lead_s']:.1f} s, p10 {f['p10_lead_s']:.1f} s")
    print("traces with a false alarm: " + ", ".join(f"{kind} {c['false_alarms']} of {c['traces']}"
                                                    for kind, c in f["false_alarms"].items())
          + f" (the crossing traces' before their event); {f['false_alarms_per_gpu_day']:.2f} false alarms per"
            f" GPU-day over {f['gpu_hours']:.1f} GPU-hours")
    print("sensor_fault events: " + ", ".join(f"{k} {v}" for k, v in f["sensor_faults"].items()))


if __name__ == "__main__":
    main()
