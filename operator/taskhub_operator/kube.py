"""The few Kubernetes API calls the operator makes beside kopf's own watching.

It logs in the way the operator's kopf login handler does (the pod's service
account, else the kubeconfig), and logs in again once when a token expires."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Callable
from typing import Any

import httpx
import kopf

JSON_PATCH = "application/json-patch+json"
USER_AGENT = "taskhub-operator"
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _data_file(data: str | bytes) -> str:
    raw = data if isinstance(data, bytes) else data.encode()
    if not raw.lstrip().startswith(b"-----"):
        raw = base64.b64decode(raw)
    fd, path = tempfile.mkstemp(prefix="taskhub-operator-", suffix=".pem")
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    return path


def _client(info: kopf.ConnectionInfo, timeout: float) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if info.insecure:
        verify = False
    elif info.ca_path or info.ca_data:
        verify = ssl.create_default_context(
            cafile=os.fsdecode(info.ca_path) if info.ca_path else _data_file(info.ca_data or "")
        )
    if isinstance(verify, ssl.SSLContext):
        cert = info.certificate_path or (
            info.certificate_data and _data_file(info.certificate_data)
        )
        key = info.private_key_path or (info.private_key_data and _data_file(info.private_key_data))
        if cert:
            verify.load_cert_chain(os.fsdecode(cert), os.fsdecode(key) if key else None)
    return httpx.AsyncClient(
        base_url=info.server,
        headers={**info.as_http_headers(), "user-agent": USER_AGENT},
        verify=verify,
        timeout=timeout,
        trust_env=info.trust_env,
    )


class Kube:
    def __init__(
        self, relogin: Callable[[], kopf.ConnectionInfo | None], timeout: float = 10.0
    ) -> None:
        self._relogin = relogin
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _connect(self) -> httpx.AsyncClient:
        info = self._relogin()
        if info is None:
            raise KubeError(401, "NoCredentials", "neither a service account nor a kubeconfig")
        return _client(info, self._timeout)

    async def request(
        self, method: str, path: str, *, body: Any = None, content_type: str | None = None
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            if self._http is None:
                self._http = self._connect()
            headers = {"content-type": content_type} if content_type else {}
            try:
                response = await self._http.request(method, path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise KubeError(503, "ApiServerUnreachable", repr(exc)) from exc
            if response.status_code == 401 and attempt == 1:
                await self.close()  # a rotated service-account token: read it again
                continue
            if response.status_code >= 400:
                try:
                    status = response.json()
                except ValueError:
                    status = {}
                raise KubeError(
                    response.status_code,
                    str(status.get("reason") or response.reason_phrase),
                    str(status.get("message") or response.text[:200]),
                )
            result: dict[str, Any] = response.json() if response.content else {}
            return result
        raise AssertionError("unreachable")

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def job_path(namespace: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"
