"""A fake Kubernetes API server: EndpointSlices and Pods, over real HTTP on loopback.

It is a fake because no real API server (kube-apiserver + etcd) can run on these machines. It imitates what
the controller relies on, as the real server does it:
- `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=…` returns an EndpointSliceList
  (`/api/v1/namespaces/{ns}/pods` a PodList)
  whose `metadata.resourceVersion` is the store's current version; equality (`k=v`) and set-based
  (`k in (a,b)`) label selectors;
- `…&watch=true&resourceVersion=N` streams newline-delimited `{"type", "object"}` events after N
  (ADDED / MODIFIED / DELETED, BOOKMARK when `allowWatchBookmarks`), ends after `timeoutSeconds`, and answers
  a version older than its compaction point with an in-stream `ERROR` event carrying a 410 Status;
- a Bearer token is required (401 otherwise); every request is recorded so tests can check that the
  controller uses only what its Role grants.
EndpointSlice objects have the discovery.k8s.io/v1 shape the EndpointSlice controller writes for a Service.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PATH = re.compile(r"^/(?:apis/discovery\.k8s\.io/v1|api/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>endpointslices|pods)$")
LIST_KIND = {"endpointslices": ("discovery.k8s.io/v1", "EndpointSliceList"), "pods": ("v1", "PodList")}


@dataclass
class Pod:
    name: str
    ip: str
    ready: bool = True
    terminating: bool = False


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str


@dataclass
class _Store:
    namespace: str
    version: int = 1
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (resourceVersion, collection, event type, object)
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    compacted_before: int = 0


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", selector))):
        found = re.fullmatch(r"([\w./-]+)\s+in\s+\(([^)]*)\)", term)
        if found:
            if labels.get(found[1]) not in {v.strip() for v in found[2].split(",")}:
                return False
            continue
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.lstrip("=").strip():
            return False
    return True


class FakeKubeAPI:
    def __init__(self, *, namespace: str = "rl", token: str = "test-token") -> None:
        self.token = token
        self.store = _Store(namespace)
        self.cond = threading.Condition()
        self.requests: list[Request] = []
        self.down = False  # answer 503 to everything (an API server restart)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- what the EndpointSlice controller would do when pods change --------------------------------

    def set_service_pods(self, service: str, pods: list[Pod], *, port: int = 50051, port_name: str = "grpc",
                         slice_name: str | None = None) -> None:
        """Write one slice of the Service (ADDED the first time, MODIFIED after, DELETED when no pods remain).

        A Service has several slices when its pods serve different port numbers (the EndpointSlice controller
        groups endpoints by port set) or when they are many; `slice_name` picks which one.
        """
        name = slice_name or f"{service}-abcde"
        with self.cond:
            self.store.version += 1
            version = self.store.version
            if not pods:
                removed = self.store.slices.pop(name, None)
                if removed is not None:
                    removed = json.loads(json.dumps(removed))
                    removed["metadata"]["resourceVersion"] = str(version)
                    self.store.events.append((version, "endpointslices", "DELETED", removed))
                self.cond.notify_all()
                return
            kind = "MODIFIED" if name in self.store.slices else "ADDED"
            obj = self._slice(name, service, pods, port, port_name, version)
            self.store.slices[name] = obj
            self.store.events.append((version, "endpointslices", kind, obj))
            self.cond.notify_all()

    def set_pod(self, name: str, component: str, phase: str = "Running", *, deleting: bool = False,
                gone: bool = False) -> None:
        """Create, update (phase, deletionTimestamp) or remove a pod of the release."""
        with self.cond:
            self.store.version += 1
            version = self.store.version
            if gone:
                removed = self.store.pods.pop(name, None)
                if removed is not None:
                    removed = {**removed, "metadata": {**removed["metadata"], "resourceVersion": str(version)}}
                    self.store.events.append((version, "pods", "DELETED", removed))
                self.cond.notify_all()
                return
            metadata: dict[str, Any] = {
                "name": name, "namespace": self.store.namespace, "resourceVersion": str(version),
                "labels": {"app.kubernetes.io/name": "semirl", "app.kubernetes.io/instance": "rl",
                           "app.kubernetes.io/component": component},
            }
            if deleting:
                metadata["deletionTimestamp"] = "2026-11-23T10:00:00Z"
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": []},
                   "status": {"phase": phase}}
            kind = "MODIFIED" if name in self.store.pods else "ADDED"
            self.store.pods[name] = obj
            self.store.events.append((version, "pods", kind, obj))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history (etcd compaction): watches from older versions get 410 Gone."""
        with self.cond:
            self.store.compacted_before = self.store.version + 1
            self.store.events.clear()
            self.cond.notify_all()

    def _slice(self, name: str, service: str, pods: list[Pod], port: int, port_name: str,
               version: int) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": self.store.namespace, "resourceVersion": str(version),
                "generateName": f"{service}-",
                "labels": {"kubernetes.io/service-name": service,
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "controller": True,
                                     "blockOwnerDeletion": True, "uid": f"uid-{service}"}],
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [pod.ip],
                 "conditions": {"ready": pod.ready and not pod.terminating, "serving": pod.ready,
                                "terminating": pod.terminating},
                 "targetRef": {"kind": "Pod", "namespace": self.store.namespace, "name": pod.name,
                               "uid": f"uid-{pod.name}"},
                 "nodeName": "gpu-node-1"}
                for pod in pods
            ],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        }

    # --- HTTP ----------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                  "reason": reason, "code": code})

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.requests.append(Request("GET", url.path, query, self.headers.get("Authorization", "")))
                if api.down:
                    return self._status(503, "ServiceUnavailable", "the API server is restarting")
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._status(401, "Unauthorized", "Unauthorized")
                match = PATH.match(url.path)
                if not match:
                    return self._status(403, "Forbidden", f"forbidden: {url.path}")
                selector, collection = query.get("labelSelector", ""), match["kind"]
                if query.get("watch") in ("true", "1"):
                    return self._watch(match["ns"], collection, selector, query)
                with api.cond:
                    stored = api.store.slices if collection == "endpointslices" else api.store.pods
                    items = [s for s in stored.values()
                             if match["ns"] == api.store.namespace and _matches(s["metadata"]["labels"], selector)]
                    version = str(api.store.version)
                api_version, list_kind = LIST_KIND[collection]
                self._json(200, {"apiVersion": api_version, "kind": list_kind,
                                 "metadata": {"resourceVersion": version}, "items": items})

            def _watch(self, namespace: str, collection: str, selector: str, query: dict[str, str]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds", "300"))
                bookmarks = query.get("allowWatchBookmarks") == "true"
                try:
                    with api.cond:
                        if since < api.store.compacted_before - 1:
                            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                    "reason": "Expired", "message": f"too old resource version: {since}"}
                            self._chunk({"type": "ERROR", "object": gone})
                            return self._end()
                    while time.monotonic() < deadline and not api.down:  # a restart drops open watches
                        with api.cond:
                            pending = [(v, t, o) for v, c, t, o in api.store.events if v > since and c == collection]
                            if not pending:
                                api.cond.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                                pending = [(v, t, o) for v, c, t, o in api.store.events
                                           if v > since and c == collection]
                        for version, kind, obj in pending:
                            since = version
                            if namespace == api.store.namespace and _matches(obj["metadata"]["labels"], selector):
                                self._chunk({"type": kind, "object": obj})
                        if bookmarks and not pending:
                            self._chunk({"type": "BOOKMARK", "object": {
                                "kind": LIST_KIND[collection][1].removesuffix("List"),
                                "apiVersion": LIST_KIND[collection][0],
                                "metadata": {"resourceVersion": str(max(since, 1))}}})
                    self._end()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _chunk(self, event: dict[str, Any]) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _end(self) -> None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
