"""A local stub of the Kubernetes API for the Kubernetes actuator's tests: no API server can be installed on these
machines (DESIGN.md), so this serves exactly the endpoints the actuator calls, with the JSON shapes the real API
returns, on 127.0.0.1 (a real HTTP server; the official ``kubernetes`` client reaches it through the kubeconfig
:meth:`KubeApiStub.kubeconfig` writes):

* ``GET /api/v1/nodes/{name}``; ``PATCH`` of it as a strategic merge patch or a JSON merge patch (the fields the
  actuator sends: ``spec.unschedulable`` and ``spec.taints``, a list replaced whole as the real strategic merge does
  for taints), conditional on ``metadata.resourceVersion`` when the patch carries one (409 otherwise), taints unique
  by key and effect (422);
* ``GET /api/v1/pods`` with ``fieldSelector=spec.nodeName=...`` and/or ``labelSelector=k=v,...``;
* ``POST /api/v1/namespaces/{ns}/pods/{name}/eviction`` (policy/v1 ``Eviction``): 201 and the pod deleted, or 429
  when a PodDisruptionBudget selecting it allows no disruption (the real message and cause), 404 for no such pod.

Every request needs the bearer token of the kubeconfig (401 otherwise) and is recorded (``requests``); ``faults``
makes the next matching request answer something else (a status and body, after a delay)."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.helpers import LocalHTTPServer, QuietHandler

TOKEN = "stub-token"
PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass
class Fault:
    """The answer of the next request whose method is ``method`` and path matches ``path`` (a regex)."""

    method: str
    path: str
    status: int
    body: Any = None  # a dict is sent as JSON, a str as it is
    delay_s: float = 0.0
    times: int = 1


@dataclass
class Pdb:
    """A PodDisruptionBudget as the server enforces it: pods of ``namespace`` whose labels hold ``selector``."""

    namespace: str
    name: str
    selector: dict[str, str]
    disruptions_allowed: int = 0
    healthy: int = 2


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A ``metav1.Status`` as the API server answers an error."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes; a list replaces the list)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


@dataclass
class KubeApiStub(LocalHTTPServer):
    """The stub's state (``nodes``, ``pods`` by ``(namespace, name)``, ``pdbs``) and its server on 127.0.0.1."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pdbs: list[Pdb] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._version = 100
        stub = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                url = urlsplit(self.path)
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                body = json.loads(raw) if raw else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                code, out = stub.handle(self.command, url.path, query, body, self.headers)
                data = out.encode() if isinstance(out, str) else json.dumps(out).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json" if not isinstance(out, str)
                                     else "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout) and closed the connection
                    pass

            do_GET = do_PATCH = do_POST = _answer  # noqa: N815 - http.server's naming

        super().__init__(Handler, poll_s=0.05)

    # --- fixtures of state ------------------------------------------------------------------------------------
    def _rv(self) -> str:
        self._version += 1
        return str(self._version)

    def add_node(self, name: str, unschedulable: bool = False, taints: list[dict[str, Any]] | None = None) -> None:
        spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24", "providerID": f"stub://{name}"}
        if unschedulable:
            spec["unschedulable"] = True
        if taints:
            spec["taints"] = taints
        self.nodes[name] = {
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": f"uid-node-{name}", "resourceVersion": self._rv(),
                         "creationTimestamp": "2026-01-05T10:00:00Z",
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": spec,
            "status": {"capacity": {"cpu": "64", "memory": "1056Gi", "nvidia.com/gpu": "8", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status",
                                       "lastHeartbeatTime": "2026-01-05T10:00:00Z",
                                       "lastTransitionTime": "2026-01-05T10:00:00Z"}]},
        }

    def add_pod(self, namespace: str, name: str, node: str, owner: str | None = "ReplicaSet",
                labels: dict[str, str] | None = None, mirror: bool = False) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-pod-{namespace}-{name}",
                                "resourceVersion": self._rv(), "creationTimestamp": "2026-01-05T10:00:00Z",
                                "labels": labels or {"app": name}}
        if owner is not None:
            meta["ownerReferences"] = [{"apiVersion": "batch/v1" if owner == "Job" else "apps/v1", "kind": owner,
                                        "name": f"{name}-owner", "uid": f"uid-owner-{name}", "controller": True,
                                        "blockOwnerDeletion": True}]
        if mirror:
            meta["annotations"] = {"kubernetes.io/config.mirror": "abc123"}
        self.pods[(namespace, name)] = {
            "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.local/train:1"}],
                     "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.244.0.7"},
        }

    def node_spec(self, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.nodes[name]["spec"])

    def calls(self, method: str = "", path: str = "") -> list[dict[str, Any]]:
        """The requests recorded, those of ``method`` whose path contains ``path`` when given."""
        return [r for r in self.requests if (not method or r["method"] == method) and path in r["path"]]

    # --- the API ----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any, headers: Any) -> tuple[int, Any]:
        self.requests.append({"method": method, "path": path, "query": query, "body": body,
                              "content_type": headers.get("Content-Type")})
        fault = next((f for f in self.faults if f.method == method and re.search(f.path, path)), None)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            time.sleep(fault.delay_s)
            return fault.status, fault.body if fault.body is not None else ""
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        with self.lock:
            if m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
                return self._node(method, m.group(1), body, headers.get("Content-Type", ""))
            if path == "/api/v1/pods" and method == "GET":
                return 200, self._pods(query)
            if (m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path)) and method == "POST":
                return self._evict(m.group(1), m.group(2), body)
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _node(self, method: str, name: str, patch: Any, content_type: str) -> tuple[int, Any]:
        node = self.nodes.get(name)
        if node is None:
            return 404, status(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")
        if method == "GET":
            return 200, node
        if method != "PATCH":
            return 405, status(405, "MethodNotAllowed", "the server does not allow this method")
        if content_type not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            return 415, status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                               f"accepted media types include: application/merge-patch+json, "
                               f"application/strategic-merge-patch+json (not {content_type})")
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv is not None and rv != node["metadata"]["resourceVersion"]:
            return 409, status(409, "Conflict", f'Operation cannot be fulfilled on nodes "{name}": the object has '
                               "been modified; please apply your changes to the latest version and try again",
                               name=name, kind="nodes")
        new = merge(node, patch)
        taints = new["spec"].get("taints") or []
        pairs = [(t.get("key"), t.get("effect")) for t in taints]
        if len(set(pairs)) != len(pairs):
            return 422, status(422, "Invalid", f'Node "{name}" is invalid: spec.taints: Duplicate value: '
                               "taints must be unique by key and effect pair", name=name, kind="Node")
        if not taints:
            new["spec"].pop("taints", None)
        if not new["spec"].get("unschedulable"):
            new["spec"].pop("unschedulable", None)
        new["metadata"]["resourceVersion"] = self._rv()
        self.nodes[name] = new
        return 200, new

    def _pods(self, query: dict[str, str]) -> dict[str, Any]:
        fields = dict(s.replace("==", "=").split("=", 1) for s in query.get("fieldSelector", "").split(",") if s)
        labels = dict(s.split("=", 1) for s in query.get("labelSelector", "").split(",") if s)
        items = [p for p in self.pods.values()
                 if fields.get("spec.nodeName", p["spec"]["nodeName"]) == p["spec"]["nodeName"]
                 and all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._version)},
                "items": copy.deepcopy(items)}

    def _evict(self, namespace: str, name: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or body.get("kind") != "Eviction" or body.get("apiVersion") != "policy/v1":
            return 400, status(400, "BadRequest", f"not a policy/v1 Eviction: {body}")
        pod = self.pods.get((namespace, name))
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        labels = pod["metadata"]["labels"]
        for pdb in self.pdbs:
            if pdb.namespace == namespace and all(labels.get(k) == v for k, v in pdb.selector.items()):
                if pdb.disruptions_allowed <= 0:
                    why = (f"The disruption budget {pdb.name} needs {pdb.healthy} healthy pods and has "
                           f"{pdb.healthy} currently")
                    return 429, status(429, "TooManyRequests", PDB_MESSAGE,
                                       causes=[{"reason": "DisruptionBudget", "message": why}])
                pdb.disruptions_allowed -= 1
        del self.pods[(namespace, name)]
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- the client's side ------------------------------------------------------------------------------------
    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        """Write a kubeconfig whose current context is this stub (:func:`write_kubeconfig`)."""
        return write_kubeconfig(path, self.url, token)


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    """Write a kubeconfig whose current context is the API server ``server`` (a bearer token, plain HTTP)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": server}}],
        "users": [{"name": "opsloop", "user": {"token": token}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "opsloop"}}],
    }))
    return path
