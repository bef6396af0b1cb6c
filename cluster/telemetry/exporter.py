"""dcgm-exporter pages of a fleet: the GPU samples of one host rendered as dcgm-exporter's ``/metrics`` page.

``opsloop sim exporter`` serves the simulator's fleet this way, one page per host, so that the whole real
chain (Prometheus scraping exporters, alert rules, ``--telemetry dcgm`` or ``prometheus``) can run on a
machine without GPUs. The page is what dcgm-exporter prints for the counters of its default
``default-counters.csv`` that the simulator models (``DCGM_FI_DEV_SM_CLOCK``, ``MEMORY_TEMP``, ``GPU_TEMP``,
``POWER_USAGE``, ``GPU_UTIL``, ``XID_ERRORS``), plus two an operator adds to that file
(``DCGM_FI_DEV_POWER_MGMT_LIMIT``, ``DCGM_FI_DEV_CLOCKS_EVENT_REASONS``): each a ``gauge`` with the ``# HELP``
text of that CSV (for the two additions, what an operator would write there), each series labelled ``gpu``,
``UUID``, ``pci_bus_id``, ``device``, ``modelName``, ``Hostname`` and ``DCGM_FI_DRIVER_VERSION``. As DCGM
reports them: temperatures, clocks and utilisation are whole numbers (DCGM's int64 fields), XID is the *last*
XID seen (0 for none; it stays on the page), the clock-event reasons are NVML's bitmask, and a reading the GPU
does not report (the simulator has no memory temperature) is DCGM's blank "not supported" value
(9223372036854775794 for an int64 field).

Rendering is ``prometheus_client``'s (a registry of ``GaugeMetricFamily`` and ``generate_latest``), which
prints every value as a float64 (``62.0``; the blank as ``9.223372036854776e+18``): the same float64 that
Prometheus stores when it scrapes a real exporter, and what :func:`cluster.telemetry.dcgm.parse_metrics`
reads back. Pure: no clock, no IO; :class:`FleetPages` holds the state an exporter keeps between scrapes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from cluster.telemetry.dcgm import THROTTLE_BITS
from cluster.telemetry.quality import DCGM_FP64_BLANK, DCGM_INT64_BLANK
from cluster.telemetry.samples import GpuSample

#: DCGM's "not supported" blanks (``DCGM_*_BLANK + 2``), as dcgm-exporter prints a field the GPU lacks.
INT64_NOT_SUPPORTED = DCGM_INT64_BLANK + 2  # 9223372036854775794
FP64_NOT_SUPPORTED = DCGM_FP64_BLANK + 2
#: The labels dcgm-exporter puts on every series (and the driver version, a label field of its CSV).
LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION")
DRIVER_VERSION = "550.90.07"
#: Profile name → the model name NVML and dcgm-exporter print (``canonical_model`` maps it back).
PRINTED_MODEL = {
    "H100-SXM": "NVIDIA H100 80GB HBM3", "H200": "NVIDIA H200", "B200": "NVIDIA B200", "GB200": "NVIDIA GB200",
    "GB300": "NVIDIA GB300", "A100-SXM": "NVIDIA A100-SXM4-80GB", "L40S": "NVIDIA L40S",
}
_REASON_BITS = {name: bit for bit, name in THROTTLE_BITS.items()}


def _whole(x: float | None) -> int | None:
    return None if x is None else int(round(x))


def encode_throttle(reasons: Iterable[str]) -> int:
    """Reason names → NVML's clocks-event-reasons bitmask (the inverse of ``dcgm.decode_throttle``)."""
    mask = 0
    for name in reasons:
        mask |= _REASON_BITS.get(name, 0)
    return mask


@dataclass(frozen=True)
class PageField:
    """One field of the page: its metric name, dcgm-exporter's help text, and how a sample gives its value."""

    name: str
    help: str
    value: Callable[[GpuSample, int], float | None]  # (sample, last XID) → value, None for a blank
    integer: bool  # an int64 DCGM field (its blank is INT64_NOT_SUPPORTED), else fp64

    @property
    def blank(self) -> float:
        return INT64_NOT_SUPPORTED if self.integer else FP64_NOT_SUPPORTED


#: The page's counters, in the order of dcgm-exporter's default-counters.csv, the two additions last.
COUNTERS = (
    PageField("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda s, _: _whole(s.sm_clock_mhz), True),
    PageField("DCGM_FI_DEV_MEMORY_TEMP", "Memory temperature (in C).", lambda s, _: _whole(s.mem_temp_c), True),
    PageField("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda s, _: _whole(s.temp_c), True),
    PageField("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
            lambda s, _: None if s.power_w is None else round(s.power_w, 3), False),
    PageField("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).",
            lambda s, _: None if s.util is None else _whole(s.util * 100.0), True),
    PageField("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", lambda _, xid: xid, True),
    PageField("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit (in W).", lambda s, _: s.power_limit_w, False),
    PageField("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "Current clock event reasons (bitmask).",
            lambda s, _: encode_throttle(s.throttle_reasons), True),
)


def gpu_labels(sample: GpuSample, model: str | None = None, driver: str = DRIVER_VERSION) -> dict[str, str]:
    """The labels dcgm-exporter gives one GPU's series; the UUID and bus id are stable for a host and index."""
    ident = uuid.uuid5(uuid.NAMESPACE_DNS, f"{sample.node}/gpu{sample.gpu}")
    name = model or sample.model
    bus = (0x18 + 0x10 * sample.gpu) % 256
    return {
        "gpu": str(sample.gpu), "UUID": f"GPU-{ident}", "pci_bus_id": f"00000000:{bus:02X}:00.0",
        "device": f"nvidia{sample.gpu}", "modelName": PRINTED_MODEL.get(name, name), "Hostname": sample.node,
        "DCGM_FI_DRIVER_VERSION": driver,
    }


def families(gpus: Sequence[GpuSample], last_xid: Mapping[str, int] | None = None, model: str | None = None,
             driver: str = DRIVER_VERSION) -> list[GaugeMetricFamily]:
    """The metric families of a page with these GPUs (one host's, in page order).

    Args:
        gpus: The latest sample of each GPU.
        last_xid: GPU name (``node/gpuN``) → the last XID it had (DCGM keeps it); absent: the sample's, or 0.
        model: A profile or printed model name for every GPU (default: each sample's ``model``).
        driver: The ``DCGM_FI_DRIVER_VERSION`` label.
    """
    xids = last_xid or {}
    out = []
    for counter in COUNTERS:
        family = GaugeMetricFamily(counter.name, counter.help, labels=LABELS)
        for s in gpus:
            labels = gpu_labels(s, model, driver)
            value = counter.value(s, xids.get(s.name, s.xid or 0))
            family.add_metric([labels[k] for k in LABELS], counter.blank if value is None else value)
        out.append(family)
    return out


class _Families:
    """A collector over a function that makes the families at each scrape."""

    def __init__(self, make: Callable[[], list[GaugeMetricFamily]]) -> None:
        self.make = make

    def collect(self) -> list[GaugeMetricFamily]:
        return self.make()


def registry_of(make: Callable[[], list[GaugeMetricFamily]]) -> CollectorRegistry:
    """A registry whose only collector is ``make`` (called at every scrape): what an HTTP endpoint serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(make))
    return registry


def render_page(gpus: Sequence[GpuSample], last_xid: Mapping[str, int] | None = None, model: str | None = None,
                driver: str = DRIVER_VERSION) -> str:
    """One host's dcgm-exporter page (the text ``/metrics`` serves) for these GPU samples."""
    fams = families(gpus, last_xid, model, driver)
    return generate_latest(registry_of(lambda: fams)).decode()


class FleetPages:
    """What an exporter keeps between scrapes: each GPU's latest sample and its last XID (sticky, as in DCGM).

    ``update`` takes the fleet's samples as they come (other kinds than GPU samples are ignored);
    ``families(host)`` and ``page(host)`` render one host. Thread-safe: an HTTP server thread renders while
    the simulator's thread updates.

    Args:
        models: Node → model (profile or printed name) for its GPUs; default each sample's ``model``.
        driver: The ``DCGM_FI_DRIVER_VERSION`` label.
    """

    def __init__(self, models: Mapping[str, str] | None = None, driver: str = DRIVER_VERSION) -> None:
        self.models = dict(models or {})
        self.driver = driver
        self.latest: dict[tuple[str, int], GpuSample] = {}
        self.last_xid: dict[str, int] = {}
        self._lock = threading.Lock()

    def update(self, samples: Iterable[object]) -> None:
        with self._lock:
            for s in samples:
                if isinstance(s, GpuSample):
                    self.latest[(s.node, s.gpu)] = s
                    if s.xid:
                        self.last_xid[s.name] = s.xid

    @property
    def hosts(self) -> list[str]:
        """The hosts seen, in first-seen order (the simulator's node order)."""
        with self._lock:
            return list(dict.fromkeys(node for node, _ in self.latest))

    def families(self, host: str) -> list[GaugeMetricFamily]:
        with self._lock:
            gpus = [s for (node, _), s in sorted(self.latest.items()) if node == host]
            xids = dict(self.last_xid)
        return families(gpus, xids, self.models.get(host), self.driver)

    def page(self, host: str) -> str:
        fams = self.families(host)
        return generate_latest(registry_of(lambda: fams)).decode()
