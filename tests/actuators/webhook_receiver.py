"""The data center's side of the webhook actuator in tests: a real HTTP receiver on 127.0.0.1 (a BMS or Slurm-style
hook) that answers from a script, then 200, and applies each ``Idempotency-Key`` once, as a real receiver would.

Used by ``tests/actuators`` (through the ``receiver`` fixture of its conftest) and by the actuator contract suite
(``tests/contracts/test_actuators.py``, as a context manager).
"""

from __future__ import annotations

import json
import time
from typing import Any

from policies.actions import parse_action
from tests.helpers import LocalHTTPServer, QuietHandler

#: The action the actuator tests send: a power cap on one GPU.
CAP = parse_action({"kind": "set_power_limit", "gpu": "n01/gpu0", "watts": 400})


class WebhookReceiver(LocalHTTPServer):
    """Records every delivery (``key``, ``auth``, ``body``); answers each POST with the next ``script`` entry
    (status, headers, seconds to wait before answering), else ``always`` (unset: 200). A 200 applies the
    delivery's ``Idempotency-Key`` once (``effects``: key -> first body)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], float]] = []
        self.always: int | None = None
        self.deliveries: list[dict[str, Any]] = []
        self.effects: dict[str, dict] = {}
        rcv = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key")
                rcv.deliveries.append({"key": key, "auth": self.headers.get("Authorization"), "body": body})
                status, headers, delay = rcv.script.pop(0) if rcv.script else (rcv.always or 200, {}, 0.0)
                time.sleep(delay)
                if status == 200:
                    rcv.effects.setdefault(key, body)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}' if status == 200 else f"status {status}".encode())
                except OSError:  # the client gave up on this try (timeout) and closed the connection
                    pass

        super().__init__(Handler)
        self.url += "/hook"
