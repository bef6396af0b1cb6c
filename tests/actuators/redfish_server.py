"""A minimal Redfish service that applies PATCH, over a mockup folder (``<path>/index.json`` per resource).

No packaged server applies a PATCH to a ``CoolingUnit``'s resources: sushy-tools' ``sushy-static`` (the server of
``tests/telemetry/test_redfish.py``) answers 204 to any PATCH and changes nothing, ``sushy-emulator`` serves
computer systems, and DMTF's Redfish-Mockup-Server is not on PyPI. So this one, a boundary we do not own, does
what a service does with a PATCH and no more: GET serves the file with an ``ETag`` (a hash of its body); PATCH
checks ``If-Match`` (412 when it names another version), merges the JSON body into the resource (a property the
resource does not have is 400 ``PropertyUnknown``), writes the file and answers 200 with the resource. ``script``
makes the next PATCHes answer a status instead (a 500 with a Redfish error body). HTTPS and HTTP Basic when given.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from tests.actuators.ticket_fakes import TestCA
from tests.helpers import LocalHTTPServer, QuietHandler

ROOT = "/redfish/v1"


def error(code: str, message: str) -> dict[str, Any]:
    """A Redfish error body."""
    return {"error": {"code": f"Base.1.18.{code}", "message": message,
                      "@Message.ExtendedInfo": [{"MessageId": f"Base.1.18.{code}", "Message": message}]}}


def merge(doc: dict[str, Any], patch: dict[str, Any], where: str = "") -> str | None:
    """Merge ``patch`` into ``doc`` in place; the first property ``doc`` lacks, or None."""
    for key, value in patch.items():
        if key not in doc:
            return f"{where}{key}"
        if isinstance(value, dict) and isinstance(doc[key], dict):
            if (bad := merge(doc[key], value, f"{where}{key}/")) is not None:
                return bad
        else:
            doc[key] = value
    return None


class PatchableRedfish(LocalHTTPServer):
    """The service on a free port of 127.0.0.1, serving (and changing) ``mockup``."""

    def __init__(self, mockup: Path, ca: TestCA | None = None, authorization: str | None = None) -> None:
        self.mockup = mockup
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []  # statuses the next PATCHes answer instead of applying them
        self.lock = threading.Lock()
        svc = self

        class Handler(QuietHandler):
            def _reply(self, status: int, body: dict[str, Any] | None, etag: str | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                if etag:
                    self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = {"method": self.command, "path": self.path.rstrip("/"), "if_match": self.headers.get("If-Match"),
                       "auth": self.headers.get("Authorization"), "body": json.loads(raw) if raw else None}
                with svc.lock:
                    svc.requests.append(req)
                    self._reply(*svc.serve(req))

            do_GET = do_PATCH = _handle  # noqa: N815 - http.server's naming

        self.authorization = authorization
        super().__init__(Handler, ca.server_context() if ca is not None else None)

    def file(self, path: str) -> Path:
        return self.mockup / path.removeprefix(ROOT).strip("/") / "index.json"

    def read(self, path: str) -> dict[str, Any]:
        """A resource as the mockup holds it now (``path`` below or with ``/redfish/v1``)."""
        return json.loads(self.file(path).read_text())

    @staticmethod
    def etag(text: str) -> str:
        return f'W/"{hashlib.sha256(text.encode()).hexdigest()[:16]}"'

    def serve(self, req: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str | None]:
        if self.authorization is not None and req["auth"] != self.authorization:
            return 401, error("NoValidSession", "no valid credentials"), None
        f = self.file(req["path"])
        if not req["path"].startswith(ROOT) or not f.is_file():
            return 404, error("ResourceMissingAtURI", f"{req['path']} not found"), None
        text = f.read_text()
        if req["method"] == "GET":
            return 200, json.loads(text), self.etag(text)
        if self.script:
            status = self.script.pop(0)
            return status, error("InternalError", "the controller did not take the request"), None
        if req["if_match"] not in (None, "*", self.etag(text)):
            return 412, error("PreconditionFailed", "the resource changed since its ETag was read"), None
        if not isinstance(req["body"], dict):
            return 400, error("MalformedJSON", "the body is not a JSON object"), None
        doc = json.loads(text)
        if (bad := merge(doc, req["body"])) is not None:
            return 400, error("PropertyUnknown", f"the property {bad} is not known to the resource"), None
        text = json.dumps(doc, indent=4)
        f.write_text(text)
        return 200, doc, self.etag(text)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """The requests received with ``method``."""
        return [r for r in self.requests if r["method"] == method]
