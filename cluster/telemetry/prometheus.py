"""Prometheus source: read the dcgm-exporter series a Prometheus server already scrapes, from its HTTP API.

For a fleet that already runs dcgm-exporter with Prometheus: opsloop asks Prometheus instead of every
exporter. Each read is one instant query (``GET /api/v1/query``) of every ``DCGM_FI_*`` field that
:data:`cluster.telemetry.dcgm.FIELDS` maps, together with ``timestamp(up)``, the time of each target's last
scrape (all series of one scrape share it). The series are mapped to GPU records by the same function as a
scraped page (:func:`cluster.telemetry.dcgm.gpu_records`), so a GPU reads the same through Prometheus as
straight from its exporter, and each sample carries the Unix time of the scrape that produced it. A GPU
whose scrape is no newer than the last one read gives no sample (nothing new: polling faster than
Prometheus scrapes repeats nothing). The response is validated with pydantic models of the API's JSON.

A Prometheus that does not answer, answers an error or something that is not its API is recorded in
``errors`` (never raised) and, after ``lost_after`` reads in a row, reported lost (a ``SourceStatus``
naming its host); a GPU that vanishes from the answer (its exporter stopped: Prometheus marks its series
stale) is reported lost the same way, and restored when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Literal

import httpx
from prometheus_client.samples import Sample as PromSample
from pydantic import BaseModel, ValidationError

from cluster.telemetry.dcgm import FIELDS, gpu_records
from cluster.telemetry.http_client import HttpClientOwner
from cluster.telemetry.liveness import Liveness
from cluster.telemetry.quality import Quarantined, Validator
from cluster.telemetry.samples import Sample, SourceStatus

#: The label that marks the rows of ``timestamp(up)`` in the answer (the DCGM rows keep their ``__name__``).
SCRAPED_AT = "opsloop_scraped_at"


class Series(BaseModel):
    """One element of an instant vector: its labels and ``[unix_time, "value"]``."""

    metric: dict[str, str]
    value: tuple[float, str]


class VectorData(BaseModel):
    resultType: Literal["vector"]  # noqa: N815 - the API's field name
    result: list[Series]


class QueryResponse(BaseModel):
    """The envelope of every answer of Prometheus's HTTP API (``status``, ``data`` or ``errorType``/``error``)."""

    status: Literal["success", "error"]
    data: VectorData | None = None
    errorType: str = ""  # noqa: N815
    error: str = ""
    warnings: list[str] = []


def dcgm_query(match: str = "") -> str:
    """The PromQL of one read: every mapped ``DCGM_FI_*`` series (``match``: extra label matchers such as
    ``job="dcgm"``), and each target's last scrape time, marked with the label :data:`SCRAPED_AT`."""
    names = "|".join(sorted(FIELDS))
    extra = f",{match}" if match.strip() else ""
    return f'{{__name__=~"{names}"{extra}}} or label_replace(timestamp(up), "{SCRAPED_AT}", "1", "job", ".*")'


def to_samples(series: list[Series]) -> list[PromSample]:
    """The answer's DCGM rows as ``prometheus_client`` samples stamped with their target's last scrape.

    A row whose target has no ``up`` (a federated or relabelled series) keeps the query's evaluation time. A
    row without ``Hostname`` (dcgm-exporter run without it) takes its ``instance``'s host.
    """
    scraped = {(s.metric.get("job", ""), s.metric.get("instance", "")): float(s.value[1])
               for s in series if SCRAPED_AT in s.metric and "__name__" not in s.metric}
    out = []
    for s in series:
        name = s.metric.get("__name__")
        if name not in FIELDS:
            continue
        labels = dict(s.metric)
        instance = labels.get("instance", "")
        if not labels.get("Hostname") and instance:
            labels["Hostname"] = httpx.URL(f"//{instance}").host or instance
        ts = scraped.get((labels.get("job", ""), instance), s.value[0])
        try:
            value = float(s.value[1])
        except ValueError:
            continue
        out.append(PromSample(name, labels, value, ts))
    return out


class PrometheusSource(HttpClientOwner):
    """``TelemetrySource`` that reads the dcgm-exporter series from a Prometheus server's HTTP API.

    Args:
        url: Prometheus's base URL (``http://prometheus:9090``, or with the path prefix it is served under).
        timeout_s: Timeout of one query.
        node_of: Host name (``Hostname`` label) → node name in the twin.
        validator: Shared validator (its counters are the source's data-quality report).
        lost_after: Failed reads in a row after which Prometheus, or a GPU missing from its answers, is lost.
        match: Extra PromQL label matchers for the DCGM series (e.g. ``job="dcgm"``); default all of them.
        headers: Extra HTTP headers (e.g. ``Authorization`` for a Prometheus behind a proxy).
        clock: Unix seconds, for the status samples of a read that got no answer.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, node_of: Callable[[str], str] = lambda h: h,
                 validator: Validator | None = None, lost_after: int = 3, match: str = "",
                 headers: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        base = httpx.URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"not an http(s) URL of a Prometheus server: {url!r}")
        self.url = url
        self.query_url = str(base.copy_with(path=base.path.rstrip("/") + "/api/v1/query"))
        self.host = base.netloc.decode()
        self.timeout_s = timeout_s
        self.node_of = node_of
        self.validator = validator or Validator()
        self.liveness = Liveness(lost_after)
        self.query = dcgm_query(match)
        self.headers = dict(headers or {})
        self.clock = clock
        self.quarantined: list[Quarantined] = []
        self.errors: dict[str, str] = {}  # url → why the last read failed (absent: it worked)
        self.warnings: list[str] = []  # Prometheus's own warnings on the last answer
        self.gpus: set[tuple[str, int]] = set()  # every (host, gpu) the answers have carried
        self._last: dict[tuple[str, int], float] = {}  # (host, gpu) → ts of its last sample
        self._n = 0
        self._client: httpx.AsyncClient | None = None

    async def _ask(self) -> list[Series] | str:
        """The answer's series, or why there are none."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers)
        try:
            resp = await self._client.get(self.query_url, params={"query": self.query})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        try:
            answer = QueryResponse.model_validate_json(resp.content)
        except ValidationError:
            return f"HTTP {resp.status_code}: not an answer of Prometheus's query API: {resp.text[:200]!r}"
        if answer.status != "success" or answer.data is None:
            return f"HTTP {resp.status_code}: {answer.errorType or 'error'}: {answer.error}"[:500]
        self.warnings = answer.warnings
        return answer.data.result

    async def read(self) -> list[Sample]:
        """The GPU samples scraped since the last read; a Prometheus that does not answer is recorded, never
        raised."""
        got = await self._ask()
        if isinstance(got, str):
            self.errors[self.url] = got
            missed = self.liveness.missed(self.host)
            if missed is None:
                return []
            return [SourceStatus(ts=round(self.clock(), 3), source="prometheus", host=self.host, ok=False,
                                 missed=missed, url=self.url, error=got[:500])]
        self.errors.pop(self.url, None)
        recs = gpu_records(to_samples(got), self.node_of, stamp=True)
        now = max((rec["ts"] for rec in recs), default=round(self.clock(), 3))
        out: list[Sample] = []
        if self.liveness.seen(self.host):
            out.append(SourceStatus(ts=now, source="prometheus", host=self.host, ok=True, url=self.url))
        here = {(rec["node"], rec["gpu"]) for rec in recs}
        for node, gpu in sorted(self.gpus - here):
            missed = self.liveness.missed(f"{node}/gpu{gpu}")
            if missed is not None:
                out.append(SourceStatus(ts=now, source="prometheus", host=f"{node}/gpu{gpu}", ok=False,
                                        missed=missed, url=self.url,
                                        error=f"{node}/gpu{gpu} missing from Prometheus's answer"))
        for node, gpu in sorted(here):
            if self.liveness.seen(f"{node}/gpu{gpu}"):
                out.append(SourceStatus(ts=now, source="prometheus", host=f"{node}/gpu{gpu}", ok=True,
                                        url=self.url))
        self.gpus |= here
        for rec in recs:
            key = (rec["node"], rec["gpu"])
            rec["ts"] = round(rec["ts"], 3)
            if rec["ts"] <= self._last.get(key, -1.0):
                continue  # no scrape since the last read
            self._last[key] = rec["ts"]
            self._n += 1
            checked = self.validator.check("prometheus", self._n, rec)
            if isinstance(checked, Quarantined):
                self.quarantined.append(checked)
            else:
                out.append(checked)
        return out
