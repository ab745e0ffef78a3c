"""The slice of the Kubernetes API the controller uses: list and watch EndpointSlices and Pods in its namespace.

Plain HTTPS with the pod's service-account token, so the controller needs no Kubernetes client library and
its RBAC stays at get/list/watch on EndpointSlices and Pods (the chart's Role). In a pod the connection comes from the
standard in-cluster files and variables; `SEMIRL_K8S_API` (and `SEMIRL_K8S_TOKEN_FILE`, `SEMIRL_K8S_CA_FILE`)
point it elsewhere, e.g. at `kubectl proxy` or at the test suite's fake API server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ENDPOINTSLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
PODS = "/api/v1/namespaces/{namespace}/pods"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class KubeAPIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status


class WatchExpired(KubeAPIError):  # noqa: N818 - the API's own name for it is "410 Gone / Expired"
    """The watch's resourceVersion is too old: list again."""


@dataclass(frozen=True)
class KubeConfig:
    base_url: str
    namespace: str
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KubeConfig | None:
        """In-cluster config (or the SEMIRL_K8S_* overrides); None when neither is present."""
        env = os.environ if environ is None else environ
        namespace = env.get("SEMIRL_K8S_NAMESPACE") or _read(SERVICE_ACCOUNT_DIR / "namespace")
        base_url = env.get("SEMIRL_K8S_API")
        if not base_url:
            host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                return None
            base_url = f"https://{f'[{host}]' if ':' in host else host}:{port}"
        token_file = _existing(env.get("SEMIRL_K8S_TOKEN_FILE"), SERVICE_ACCOUNT_DIR / "token")
        ca_file = _existing(env.get("SEMIRL_K8S_CA_FILE"), SERVICE_ACCOUNT_DIR / "ca.crt")
        return cls(base_url.rstrip("/"), namespace or "default", token_file, ca_file)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _existing(override: str | None, default: Path) -> Path | None:
    if override:
        return Path(override)
    return default if default.exists() else None


class KubeAPI:
    def __init__(self, config: KubeConfig, *, timeout_s: float = 10.0) -> None:
        self.config = config
        verify: Any = str(config.ca_file) if config.ca_file else True
        self._http = httpx.Client(base_url=config.base_url, verify=verify, timeout=timeout_s)

    def _headers(self) -> dict[str, str]:
        # Bound service-account tokens rotate (about hourly): read the file on every request.
        token = _read(self.config.token_file) if self.config.token_file else None
        return {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def path(self, template: str) -> str:
        """A collection path (ENDPOINTSLICES, PODS) in this namespace."""
        return template.format(namespace=self.config.namespace)

    def list(self, collection: str, label_selector: str) -> tuple[list[dict[str, Any]], str]:
        """(items, resourceVersion of the list) of a collection path."""
        response = self._http.get(collection, params={"labelSelector": label_selector}, headers=self._headers())
        if response.status_code != 200:
            raise KubeAPIError(response.status_code, response.text[:300])
        body = response.json()
        return body.get("items") or [], body.get("metadata", {}).get("resourceVersion", "")

    def watch(
        self, collection: str, label_selector: str, resource_version: str, *, timeout_s: int = 300,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) pairs until the server ends the watch; raises WatchExpired on 410."""
        params = {
            "labelSelector": label_selector, "watch": "true", "resourceVersion": resource_version,
            "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s),
        }
        timeout = httpx.Timeout(10.0, read=timeout_s + 30.0)
        with self._http.stream("GET", collection, params=params, headers=self._headers(),
                               timeout=timeout) as response:
            if response.status_code == 410:
                raise WatchExpired(410, "resource version too old")
            if response.status_code != 200:
                raise KubeAPIError(response.status_code, response.read().decode(errors="replace")[:300])
            for line in response.iter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type", ""), event.get("object") or {}
                if kind == "ERROR":
                    status = int(obj.get("code") or 500)
                    error = WatchExpired if status == 410 else KubeAPIError
                    raise error(status, str(obj.get("message", "watch error")))
                yield kind, obj

    def close(self) -> None:
        self._http.close()
