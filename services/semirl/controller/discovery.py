"""Where the controller finds service instances: generators to Reload, and every service's replica count.

Two sources, one interface:
- `EndpointSliceDiscovery` (in a cluster): an informer — LIST then WATCH — over the EndpointSlices of each
  component's Service. A `kubectl scale` up or down changes those slices, so the next Reload fan-out and
  `GET /v1/runs/{id}` see the new set without a restart. Only ready, non-terminating endpoints get Reloads.
  With SEMIRL_K8S_POD_SELECTOR, a second informer over the release's pods counts those that exist but have no
  endpoint yet (Pending on a GPU, pulling an image), so `total` and `pending` tell a stuck scale-up apart.
- `RedisDiscovery` (outside a cluster): the registrations every service refreshes in Redis
  (core/registration.py).
`discovery_from_env` picks one: SEMIRL_DISCOVERY=kubernetes|redis|auto (auto: kubernetes when running in a
pod with SEMIRL_K8S_SERVICES set, else redis).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from semirl.core import keys
from semirl.core.registration import registered

from .kubeapi import ENDPOINTSLICES, PODS, SERVICE_NAME_LABEL, KubeAPI, KubeConfig, WatchExpired

log = logging.getLogger(__name__)


class Discovery(Protocol):
    source: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def endpoints(self, service: str) -> dict[str, str]:
        """Ready instances of a service: instance id (pod name) -> host:port of its gRPC server."""
        ...

    def replicas(self) -> dict[str, dict[str, int]]:
        """Per service: {"ready": n, "total": m} (total counts not-yet-ready instances too)."""
        ...


class RedisDiscovery:
    source = "redis"

    def __init__(self, client: redis.Redis, services: tuple[str, ...] = keys.SERVICES) -> None:
        self.client = client
        self.services = services

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def endpoints(self, service: str) -> dict[str, str]:
        return registered(self.client, service)

    def replicas(self) -> dict[str, dict[str, int]]:
        counts = {}
        for service in self.services:
            live = len(registered(self.client, service))  # a registration exists only while serving
            counts[service] = {"ready": live, "total": live}
        return counts


@dataclass(frozen=True)
class SliceEndpoint:
    instance: str
    address: str
    ready: bool


def slice_endpoints(endpoint_slice: dict[str, Any], port_name: str = "grpc") -> list[SliceEndpoint]:
    """The endpoints of one EndpointSlice that serve `port_name`; terminating ones are left out.

    `conditions.ready` unset means ready (the API's documented reading of an unknown state).
    """
    ports = [p for p in endpoint_slice.get("ports") or [] if p.get("port")]
    port = next((p["port"] for p in ports if p.get("name") == port_name), None)
    if port is None and len(ports) == 1 and not ports[0].get("name"):
        port = ports[0]["port"]
    if port is None:
        return []
    found = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        conditions = endpoint.get("conditions") or {}
        if not addresses or conditions.get("terminating"):
            continue
        host = addresses[0]
        instance = (endpoint.get("targetRef") or {}).get("name") or host
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        found.append(SliceEndpoint(instance, address, conditions.get("ready") is not False))
    return found


class Informer:
    """A local copy of one collection (LIST, then WATCH from the list's resourceVersion; relist on 410 or after
    an error, with backoff), as client-go's informers keep it. Objects are keyed by name."""

    def __init__(self, api: KubeAPI, collection: str, selector: str, *, watch_timeout_s: int = 300,
                 max_backoff_s: float = 30.0) -> None:
        self.api = api
        self.collection = collection
        self.selector = selector
        self.watch_timeout_s = watch_timeout_s
        self.max_backoff_s = max_backoff_s
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"informer:{self.collection}", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def objects(self) -> list[dict[str, Any]]:
        if not self.synced.is_set():
            self.relist()  # not watching right now: ask the API rather than answer from nothing
        with self._lock:
            return list(self._objects.values())

    def relist(self) -> str:
        items, version = self.api.list(self.collection, self.selector)
        with self._lock:
            self._objects = {item["metadata"]["name"]: item for item in items}
        self.synced.set()
        return version

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self.relist()
                backoff = 0.5
                while not self._stop.is_set():
                    version = self._watch(version)
            except WatchExpired:
                log.info("watch of %s expired; listing again", self.collection)
            except Exception as err:  # noqa: BLE001 - API, network or decoding errors: keep the informer alive
                if self._stop.is_set():
                    return
                self.synced.clear()
                log.warning("watch of %s: %s; retrying in %.1fs", self.collection, err, backoff)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)

    def _watch(self, version: str) -> str:
        events = self.api.watch(self.collection, self.selector, version, timeout_s=self.watch_timeout_s)
        for kind, obj in events:
            if self._stop.is_set():
                break
            metadata = obj.get("metadata") or {}
            version = metadata.get("resourceVersion") or version
            name = metadata.get("name")
            if kind == "BOOKMARK" or not name:
                continue
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(name, None)
                else:  # ADDED, MODIFIED
                    self._objects[name] = obj
        return version


COMPONENT_LABEL = "app.kubernetes.io/component"


class EndpointSliceDiscovery:
    """Ready endpoints from the components' EndpointSlices; with `pod_selector`, also the pods that exist
    but have no endpoint yet (Pending for a GPU, pulling an image), counted per component label."""

    source = "kubernetes"

    def __init__(self, api: KubeAPI, services: dict[str, str], *, pod_selector: str = "", port_name: str = "grpc",
                 watch_timeout_s: int = 300) -> None:
        if not services:
            raise ValueError("no Services to watch")
        self.api = api
        self.services = dict(services)  # component -> Service name
        self.port_name = port_name
        self.selector = f"{SERVICE_NAME_LABEL} in ({','.join(sorted(set(services.values())))})"
        self.slices = Informer(api, api.path(ENDPOINTSLICES), self.selector, watch_timeout_s=watch_timeout_s)
        self.pods = Informer(api, api.path(PODS), pod_selector, watch_timeout_s=watch_timeout_s) \
            if pod_selector else None

    @property
    def synced(self) -> threading.Event:
        return self.slices.synced

    def start(self) -> None:
        self.slices.start()
        if self.pods is not None:
            self.pods.start()

    def stop(self) -> None:
        for informer in (self.slices, self.pods):
            if informer is not None:
                informer.signal_stop()
        self.api.close()  # ends watches blocked in a read
        self.slices.stop()
        if self.pods is not None:
            self.pods.stop()

    def _instances(self, service: str) -> dict[str, SliceEndpoint]:
        """One entry per instance of a component's Service (a pod can sit in two slices while they shuffle)."""
        name = self.services.get(service)
        if name is None:
            return {}
        slices = [s for s in self.slices.objects()
                  if (s.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == name]
        instances: dict[str, SliceEndpoint] = {}
        for endpoint_slice in slices:
            for endpoint in slice_endpoints(endpoint_slice, self.port_name):
                known = instances.get(endpoint.instance)
                if known is None or (endpoint.ready and not known.ready):
                    instances[endpoint.instance] = endpoint
        return instances

    def endpoints(self, service: str) -> dict[str, str]:
        return {i: e.address for i, e in sorted(self._instances(service).items()) if e.ready}

    def replicas(self) -> dict[str, dict[str, int]]:
        pods: dict[str, list[dict[str, Any]]] = {}
        if self.pods is not None:
            for pod in self.pods.objects():
                metadata = pod.get("metadata") or {}
                if metadata.get("deletionTimestamp"):
                    continue  # terminating: already on its way out
                pods.setdefault((metadata.get("labels") or {}).get(COMPONENT_LABEL, ""), []).append(pod)
        counts = {}
        for service in self.services:
            instances = self._instances(service).values()
            count = {"ready": sum(e.ready for e in instances), "total": len(instances)}
            if self.pods is not None:
                mine = pods.get(service, [])
                count["total"] = len(mine)
                count["pending"] = sum((p.get("status") or {}).get("phase") == "Pending" for p in mine)
            counts[service] = count
        return counts


def parse_services(text: str) -> dict[str, str]:
    """"generator=rel-semirl-generator,verifier=rel-semirl-verifier" -> {component: Service name}."""
    services = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        component, sep, name = item.partition("=")
        if not sep or not component.strip() or not name.strip():
            raise ValueError(f"SEMIRL_K8S_SERVICES entry {item!r} is not component=service-name")
        services[component.strip()] = name.strip()
    return services


def discovery_from_env(client: redis.Redis, environ: Mapping[str, str] | None = None) -> Discovery:
    env = os.environ if environ is None else environ
    mode = env.get("SEMIRL_DISCOVERY", "auto").strip().lower()
    if mode not in ("auto", "kubernetes", "redis"):
        raise ValueError(f"SEMIRL_DISCOVERY must be auto, kubernetes or redis, not {mode!r}")
    services = parse_services(env.get("SEMIRL_K8S_SERVICES", ""))
    config = KubeConfig.from_env(env) if mode != "redis" else None
    if mode == "kubernetes" or (mode == "auto" and config is not None and services):
        if config is None:
            raise ValueError("SEMIRL_DISCOVERY=kubernetes but no in-cluster API (KUBERNETES_SERVICE_HOST) "
                             "or SEMIRL_K8S_API is set")
        if not services:
            raise ValueError("SEMIRL_DISCOVERY=kubernetes needs SEMIRL_K8S_SERVICES (component=service,...)")
        pod_selector = env.get("SEMIRL_K8S_POD_SELECTOR", "")
        log.info("discovery: EndpointSlices of %s (pods: %s) in namespace %s", services, pod_selector or "-",
                 config.namespace)
        return EndpointSliceDiscovery(KubeAPI(config), services, pod_selector=pod_selector)
    log.info("discovery: service registrations in Redis")
    return RedisDiscovery(client)
