"""Metrics kept by the process that owns them, handed out as plain data (``Metrics.dump``).

Each service (twin, agent, gateway) keeps a :class:`Metrics` and answers ``metrics()`` with its dump; the
ingress renders every process's dump in the Prometheus text format at ``/metrics``
(``serving.metrics``). Counters are totals since the process started (Prometheus computes rates and
handles the reset of a restarted actor). The catalogue below is the one list of names, kinds and helps.
"""

from __future__ import annotations

import bisect
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]
#: Seconds: from a millisecond retrieval to a human's decision hours later.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   900.0, 3600.0, 14400.0)
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

CATALOGUE: dict[str, tuple[Kind, str]] = {
    "opsloop_samples_total": ("counter", "Samples the twin ingested, by telemetry source."),
    "opsloop_samples_quarantined_total": ("counter", "Records refused by data quality, by source and reason."),
    "opsloop_events_total": ("counter", "Events appended to the event log, by kind."),
    "opsloop_barrier_wait_seconds": ("histogram", "Mean wait of the shards at the sharded twin's barrier, per tick."),
    "opsloop_incidents_open": ("gauge", "Incidents the agent holds open."),
    "opsloop_proposals_total": ("counter", "Proposals the agent made, by source (llm or fallback)."),
    "opsloop_retrieval_latency_seconds": ("histogram", "Runbook retrieval latency in the agent."),
    "opsloop_llm_ttft_seconds": ("histogram", "Time to the first token of the agent's model calls."),
    "opsloop_llm_tokens_per_second": ("histogram", "Decode rate of the agent's model calls (tokens after the first)."),
    "opsloop_approvals": ("gauge", "Approvals by state."),
    "opsloop_decision_latency_seconds": ("histogram", "From an approval's opening to the decision that settled it."),
    "opsloop_actions_total": ("counter", "Actions carried out by the actuators, by outcome (executed, failed)."),
    "opsloop_action_outcomes_total": ("counter", "Observed outcomes of executed actions (met, missed ...)."),
    "opsloop_http_rejected_total": ("counter", "HTTP requests refused before the API by limit (size, rate)."),
}


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class Metrics:
    """Counters, gauges and histograms of one process, by catalogue name and labels."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._hist: dict[str, dict[tuple[tuple[str, str], ...], list[Any]]] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}

    def _check(self, name: str, kind: Kind) -> None:
        if CATALOGUE.get(name, (None,))[0] != kind:
            raise KeyError(f"{name} is not a {kind} of the catalogue")

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        self._check(name, "counter")
        series = self._values.setdefault(name, {})
        series[_key(labels)] = series.get(_key(labels), 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge (or a counter read from a durable total, such as the event log's counts)."""
        if CATALOGUE.get(name, (None,))[0] not in ("gauge", "counter"):
            raise KeyError(f"{name} is not a gauge or counter of the catalogue")
        self._values.setdefault(name, {})[_key(labels)] = float(value)

    def clear(self, name: str) -> None:
        """Forget every series of a gauge (before setting the current ones)."""
        self._values.pop(name, None)

    def declare(self, name: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        """Make a histogram exist (with zero observations) so a scrape always shows it."""
        self._check(name, "histogram")
        self._bounds.setdefault(name, buckets)
        self._hist.setdefault(name, {})

    def observe(self, name: str, value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS, **labels: str) -> None:
        """Add one observation to a histogram."""
        self.declare(name, buckets)
        bounds = self._bounds[name]
        h = self._hist[name].setdefault(_key(labels), [[0] * (len(bounds) + 1), 0.0, 0])
        h[0][bisect.bisect_left(bounds, value)] += 1
        h[1] += value
        h[2] += 1

    def dump(self) -> list[dict[str, Any]]:
        """Every metric as ``{"name", "kind", "help", "series": [...]}``; a histogram series carries cumulative
        ``buckets`` (``[upper bound, count]``, the last ``+Inf``), ``sum`` and ``count``."""
        out = []
        for name, series in sorted(self._values.items()):
            kind, help_ = CATALOGUE[name]
            out.append({"name": name, "kind": kind, "help": help_,
                        "series": [{"labels": dict(k), "value": v} for k, v in sorted(series.items())]})
        for name, series in sorted(self._hist.items()):
            bounds = self._bounds[name]
            rows = []
            for k, (counts, total, n) in sorted(series.items()):
                cum, acc = [], 0
                for bound, c in zip((*bounds, float("inf")), counts, strict=True):
                    acc += c
                    cum.append([bound, acc])
                rows.append({"labels": dict(k), "buckets": cum, "sum": total, "count": n})
            out.append({"name": name, "kind": "histogram", "help": CATALOGUE[name][1], "series": rows})
        return out
