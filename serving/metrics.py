"""``/metrics``: every process's metrics (twin, agent, gateway, this ingress) in the Prometheus text format.

The metrics live where they are made (``actors.metrics``); a scrape asks each actor for its dump and renders
them together through a ``prometheus_client`` collector, so one scrape shows the whole loop. Every metric of
the catalogue is declared (``# HELP``/``# TYPE``) even before its first observation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from actors.metrics import CATALOGUE

log = logging.getLogger("opsloop.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def merge(dumps: Iterable[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several processes' dumps as one: counters and histograms add up, a gauge keeps the last value."""
    out: dict[str, dict[str, Any]] = {}
    for dump in dumps:
        for fam in dump:
            if fam.get("name") not in CATALOGUE:
                continue
            into = out.setdefault(fam["name"], {"kind": fam["kind"], "series": {}})
            for s in fam["series"]:
                key = tuple(sorted(s["labels"].items()))
                old = into["series"].get(key)
                if old is None or fam["kind"] == "gauge":
                    into["series"][key] = {**s, "buckets": [list(b) for b in s.get("buckets", [])]}
                elif fam["kind"] == "counter":
                    old["value"] += s["value"]
                elif [b[0] for b in old["buckets"]] == [b[0] for b in s["buckets"]]:
                    old["buckets"] = [[b0, c0 + c1] for (b0, c0), (_, c1) in zip(old["buckets"], s["buckets"],
                                                                                   strict=True)]
                    old["sum"] += s["sum"]
                    old["count"] += s["count"]
    return out


class _Collector:
    def __init__(self, merged: dict[str, dict[str, Any]]) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Metric]:
        for name, (kind, help_) in sorted(CATALOGUE.items()):
            series = list(self.merged.get(name, {}).get("series", {}).values())
            labels = sorted({k for s in series for k in s["labels"]})
            if kind == "counter":
                fam: Metric = CounterMetricFamily(name, help_, labels=labels)
            elif kind == "gauge":
                fam = GaugeMetricFamily(name, help_, labels=labels)
            else:
                fam = HistogramMetricFamily(name, help_, labels=labels)
            for s in series:
                values = [str(s["labels"].get(k, "")) for k in labels]
                if kind == "histogram":
                    buckets = [(floatToGoString(b), c) for b, c in s["buckets"]]
                    fam.add_metric(values, buckets, s["sum"])  # type: ignore[call-arg]
                else:
                    fam.add_metric(values, s["value"])  # type: ignore[call-arg]
            yield fam


def render(dumps: Iterable[list[dict[str, Any]]]) -> bytes:
    """The Prometheus text exposition of the merged dumps."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(merge(dumps)))  # type: ignore[arg-type]
    return generate_latest(registry)


async def gather(ports: Iterable[tuple[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each port's ``metrics()`` dump; a port that cannot answer is left out (and logged), not a failed scrape."""
    dumps = []
    for name, port in ports:
        try:
            dumps.append(await port.metrics())
        except Exception:  # noqa: BLE001 - a down actor must not take the scrape with it
            log.warning("no metrics from %s", name, exc_info=True)
    return dumps
