"""Local fakes of services we do not own, speaking exactly the HTTP the real client libraries send: Jira's REST API
v2 (``jira``), ServiceNow's Table API (``pysnc``) and PagerDuty's Events API v2 (``pagerduty``). Each is a real HTTPS
server on 127.0.0.1 (pysnc and pagerduty take https URLs only) with a certificate from a test CA made here
(:class:`TestCA`; clients verify against ``ca.file``), records every request it gets (``requests``), checks the
credentials, and answers from ``script`` first ("METHOD /path" -> statuses to answer before serving normally).

Used by ``tests/actuators/test_tickets_paging.py`` and the actuator contract suite.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import json
import re
import shutil
import ssl
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import LocalHTTPServer, QuietHandler


class TestCA:
    """A CA and a certificate for 127.0.0.1 it signed, written to a temporary directory (``file``: the CA's PEM)."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opsloop-ca-"))
        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsloop test CA")])
        ca = (x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                      serial_number=x509.random_serial_number(), not_valid_before=start,
                                      not_valid_after=end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False),
                             critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                                        issuer_name=ca_name, public_key=key.public_key(),
                                        serial_number=x509.random_serial_number(), not_valid_before=start,
                                        not_valid_after=end)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.file = self.dir / "ca.pem"
        self.file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert = self.dir / "server.pem"
        self.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert)
        return ctx

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class FakeService(LocalHTTPServer):
    """The shared part: an HTTPS server on a free port of 127.0.0.1 that records requests and plays ``script``."""

    def __init__(self, ca: TestCA) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        svc = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = {"method": self.command, "path": parts.path, "query": urllib.parse.parse_qs(parts.query),
                       "auth": self.headers.get("Authorization"), "body": json.loads(raw) if raw else None}
                with svc.lock:
                    svc.requests.append(req)
                    scripted = svc.script.get(f"{self.command} {parts.path}")
                    status = scripted.pop(0) if scripted else None
                    if status is None:
                        status, body, headers = svc.serve(req)
                    else:
                        body, headers = {"errorMessages": [f"scripted {status}"]}, {}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's naming

        super().__init__(Handler, ca.server_context())

    def serve(self, req: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        """The requests received for ``method path``."""
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeJira(FakeService):
    """Jira's REST API v2 as the jira client uses it: serverInfo (at construction), field (its search's field names),
    search (Data Center) or search/jql (``cloud``), and issue creation in project ``project``."""

    def __init__(self, ca: TestCA, auth: str, project: str = "OPS", cloud: bool = False) -> None:
        self.auth, self.project, self.cloud = auth, project, cloud
        self.issues: list[dict[str, Any]] = []
        super().__init__(ca)

    def serve(self, req: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if req["auth"] != self.auth:
            return 401, {"errorMessages": ["You are not authenticated."]}, {}
        path, q = req["path"], req["query"]
        if req["method"] == "GET" and path == "/rest/api/2/serverInfo":
            return 200, {"baseUrl": self.url, "version": "9.12.2", "versionNumbers": [9, 12, 2],
                         "deploymentType": "Cloud" if self.cloud else "Server"}, {}
        if req["method"] == "GET" and path == "/rest/api/2/field":
            return 200, [{"id": "summary", "name": "Summary", "clauseNames": ["summary"]},
                         {"id": "labels", "name": "Labels", "clauseNames": ["labels"]}], {}
        if req["method"] == "GET" and path == ("/rest/api/2/search/jql" if self.cloud else "/rest/api/2/search"):
            jql = q.get("jql", [""])[0]
            project = re.search(r'project = "([^"]+)"', jql)
            label = re.search(r'labels = "([^"]+)"', jql)
            if not (project and label):
                return 400, {"errorMessages": [f"unsupported JQL in this fake: {jql}"]}, {}
            found = [i for i in self.issues if i["fields"]["project"]["key"] == project[1]
                     and label[1] in i["fields"]["labels"]]
            shown = [{"id": i["id"], "key": i["key"], "fields": {"summary": i["fields"]["summary"]}} for i in found]
            if self.cloud:
                return 200, {"issues": shown[:1], "isLast": True}, {}
            return 200, {"startAt": 0, "maxResults": 1, "total": len(found), "issues": shown[:1]}, {}
        if req["method"] == "POST" and path == "/rest/api/2/issue":
            fields = (req["body"] or {}).get("fields", {})
            if fields.get("project", {}).get("key") != self.project:
                return 400, {"errorMessages": [], "errors": {"project": "project is required"}}, {}
            if not fields.get("summary") or not fields.get("issuetype", {}).get("name"):
                return 400, {"errorMessages": [], "errors": {"summary": "You must specify a summary."}}, {}
            n = len(self.issues) + 1
            issue = {"id": str(10000 + n), "key": f"{self.project}-{n}", "fields": fields}
            self.issues.append(issue)
            link = f"{self.url}/rest/api/2/issue/{issue['id']}"
            return 201, {"id": issue["id"], "key": issue["key"], "self": link}, {}
        return 404, {"errorMessages": [f"no {req['method']} {path} in this fake"]}, {}


class FakeServiceNow(FakeService):
    """ServiceNow's Table API on ``incident`` as pysnc uses it: a GET with ``sysparm_query`` (answered with
    ``X-Total-Count`` and, for ``sysparm_display_value=all``, value/display_value pairs) and a POST creating one."""

    def __init__(self, ca: TestCA, user: str, password: str) -> None:
        self.auth = basic(user, password)
        self.records: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        super().__init__(ca)

    def serve(self, req: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if req["auth"] != self.auth:
            return 401, {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth"},
                         "status": "failure"}, {}
        if req["path"] != "/api/now/table/incident":
            return 404, {"error": {"message": "Invalid table", "detail": req["path"]}, "status": "failure"}, {}
        q = req["query"]
        both = q.get("sysparm_display_value", ["false"])[0] == "all"

        def shown(rec: dict[str, str]) -> dict[str, Any]:
            fields = q.get("sysparm_fields", [",".join(rec)])[0].split(",")
            return {k: ({"value": rec[k], "display_value": rec[k]} if both else rec[k]) for k in fields if k in rec}

        if req["method"] == "GET":
            conds = [c.split("=", 1) for c in q.get("sysparm_query", [""])[0].split("^") if "=" in c]
            found = [r for r in self.records if all(r.get(k) == v for k, v in conds)]
            limit = int(q.get("sysparm_limit", ["10000"])[0])
            return 200, {"result": [shown(r) for r in found[:limit]]}, {"X-Total-Count": str(len(found))}
        if req["method"] == "POST":
            body = req["body"] or {}
            if not body.get("short_description"):
                return 400, {"error": {"message": "short_description is mandatory"}, "status": "failure"}, {}
            n = next(self._ids)
            rec = {**{k: str(v) for k, v in body.items()}, "sys_id": f"{n:032x}", "number": f"INC{n:07d}"}
            self.records.append(rec)
            return 201, {"result": shown(rec)}, {}
        return 405, {"error": {"message": "method not allowed"}}, {}


class FakePagerDuty(FakeService):
    """PagerDuty's Events API v2: ``POST /v2/enqueue`` with the routing key in the body, answered 202 with the
    ``dedup_key``; ``alerts`` holds one alert per dedup key (a repeat joins it, as PagerDuty deduplicates)."""

    def __init__(self, ca: TestCA, routing_key: str) -> None:
        self.routing_key = routing_key
        self.alerts: dict[str, dict[str, Any]] = {}
        super().__init__(ca)

    def serve(self, req: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if req["method"] != "POST" or req["path"] != "/v2/enqueue":
            return 404, {"status": "not found"}, {}
        body = req["body"] or {}
        if body.get("routing_key") != self.routing_key:
            return 400, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": ["Invalid routing key"]}, {}
        payload = body.get("payload") or {}
        if body.get("event_action") != "trigger" or not all(payload.get(k) for k in ("summary", "source", "severity")):
            return 400, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": ["payload summary, source and severity are required"]}, {}
        key = body.get("dedup_key") or f"generated-{len(self.alerts) + 1}"
        self.alerts.setdefault(key, body)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}, {}
