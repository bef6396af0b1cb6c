"""dcgm-exporter pages in the real format, for tests: the labels dcgm-exporter prints (``gpu``, ``UUID``,
``pci_bus_id``, ``device``, ``modelName``, ``Hostname``), whole degrees, DCGM's blank sentinel for a field
the GPU does not support, the sticky ``DCGM_FI_DEV_XID_ERRORS`` (the last XID, with ``err_code``/``err_msg``),
and either name of the clock-event bitmask (``CLOCKS_EVENT_REASONS``, older ``CLOCK_THROTTLE_REASONS``)."""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: DCGM_INT64_NOT_SUPPORTED (DCGM_INT64_BLANK + 2), as dcgm-exporter prints an unsupported int64 field.
BLANK = "9223372036854775794"
FIELDS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "clock"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "mem_temp"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", "limit"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "util"),
    ("REASONS", "gauge", "Current clock event reasons (bitmask).", "reasons"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "xid"),
)

XID_MSG = {79: "GPU has fallen off the bus", 48: "DBE (Double Bit Error) ECC Error", 13: "Graphics Engine Exception"}


@dataclass
class Gpu:
    """One GPU's readings on a page; ``None`` prints DCGM's blank value."""

    index: int
    temp: int | None = 62
    mem_temp: int | None = None  # blank: many GPUs do not report it
    power: float | None = 650.0
    limit: float | None = 700.0
    clock: int | None = 1980
    util: int | None = 98
    reasons: int = 0
    xid: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def page(host: str, model: str, gpus: list[Gpu], new_reason_name: bool = True) -> str:
    """One dcgm-exporter ``/metrics`` page of ``host``."""
    reasons = "DCGM_FI_DEV_CLOCKS_EVENT_REASONS" if new_reason_name else "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"
    out: list[str] = []
    for name, kind, help_, attr in FIELDS:
        name = reasons if name == "REASONS" else name
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for g in gpus:
            labels = {"gpu": str(g.index), "UUID": f"GPU-{zlib.crc32(f'{host}/{g.index}'.encode()):08x}-0000-0000",
                      "pci_bus_id": f"00000000:{0x18 + 16 * g.index:02X}:00.0", "device": f"nvidia{g.index}",
                      "modelName": model, "Hostname": host, "DCGM_FI_DRIVER_VERSION": "550.90.07"}
            value = getattr(g, attr)
            if attr == "xid" and value:
                labels |= {"err_code": str(value), "err_msg": XID_MSG.get(value, "")}
            text = BLANK if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
            out.append(f"{name}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in labels.items())}}} {text}")
    return "\n".join(out) + "\n"


class Exporter:
    """A dcgm-exporter stand-in on 127.0.0.1 serving ``self.text``; ``status`` other than 200 is an HTTP error;
    ``barrier`` makes each request wait until that many requests are in flight at once."""

    def __init__(self, text: str) -> None:
        self.text, self.status, self.barrier = text, 200, None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if owner.barrier is not None:
                    owner.barrier.wait()
                body = owner.text.encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
