"""Harness of the operator tests: the real kopf operator (kopf.testing.KopfRunner,
its own thread and loop, or `taskhub operator` as a process) against a
Kubernetes API server (kmock's emulator, apiserver.py), and the project's own
RabbitMQ node with its management API for real queue depths."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kopf.testing import KopfRunner

from tests.operator.apiserver import ApiServer, serving
from tests.support.wait import eventually

# Read when taskhub_operator.handlers is imported (the timer's interval).
os.environ["TASKHUB_OPERATOR_INTERVAL"] = "0.3"
os.environ["TASKHUB_OPERATOR_METRICS_PORT"] = "0"

NS = "taskhub"
NAME = "taskhub"
OLD, NEW = "registry.example/taskhub:1.3.2", "registry.example/taskhub:1.4.0"
TASKHUBS = "/apis/taskhub.io/v1alpha1/namespaces/taskhub/taskhubs"
DEPLOYMENTS = "/apis/apps/v1/namespaces/taskhub/deployments"
JOBS = "/apis/batch/v1/namespaces/taskhub/jobs"
SECRETS = "/api/v1/namespaces/taskhub/secrets"
RESOURCES: dict[str, dict[str, Any]] = {
    "taskhub.io/v1alpha1/taskhubs": {"kind": "TaskHub", "subresources": {"status"}},
    "apps/v1/deployments": {"kind": "Deployment", "subresources": {"status", "scale"}},
    "batch/v1/jobs": {"kind": "Job", "subresources": {"status"}},
    "v1/secrets": {"kind": "Secret", "subresources": set()},
    "v1/events": {"kind": "Event", "subresources": set()},
    "events.k8s.io/v1/events": {"kind": "Event", "subresources": set()},
    # Discovered only: kopf waits for both to be served before it watches
    # anything, but lists neither with scanning disabled.
    "v1/namespaces": {"kind": "Namespace", "subresources": set(), "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "subresources": set(),
        "namespaced": False,
    },
}


# Every request the operator made in this session (kopf's and its own client's):
# test_rbac.py, which runs last, checks them against the chart's Role.
OPERATOR_REQUESTS: list[tuple[str, str, dict[str, str]]] = []
OPERATOR_AGENTS = ("kopf/", "taskhub-operator")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.nodeid.startswith("tests/operator/test_rbac.py")]
    items[:] = [item for item in items if item not in last] + last


@pytest.fixture
async def apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ApiServer]:
    kubeconfig = tmp_path / "kubeconfig"
    async with serving(RESOURCES, kubeconfig) as api:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        try:
            yield api
        finally:
            OPERATOR_REQUESTS.extend(
                (r.method, r.url.path, dict(r.params))
                for r in api
                if r.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS)
            )


class Cluster:
    """What tests do to the API server: create objects and play the controllers."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.http = httpx.AsyncClient(base_url=str(api.url), timeout=10)

    async def close(self) -> None:
        await self.http.aclose()

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(path, json=body)
        assert response.status_code < 300, response.text
        return dict(response.json())

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await self.http.get(path)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def patch(self, path: str, body: Any) -> dict[str, Any]:
        response = await self.http.patch(
            path, json=body, headers={"content-type": "application/merge-patch+json"}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def delete(self, path: str) -> None:
        response = await self.http.delete(path)
        assert response.status_code in (200, 202), response.text

    async def set_status(self, path: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self.patch(f"{path}/status", {"status": status})

    async def taskhub(self) -> dict[str, Any]:
        found = await self.get(f"{TASKHUBS}/{NAME}")
        assert found is not None
        return found

    async def condition(self, kind: str) -> dict[str, Any] | None:
        status = (await self.taskhub()).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)

    async def jobs(self) -> list[dict[str, Any]]:
        listed = await self.get(JOBS)
        assert listed is not None
        return list(listed["items"])

    async def finish_job(self, name: str, *, succeeded: bool, message: str = "") -> None:
        now = "2026-12-01T10:00:00Z"
        condition = (
            {"type": "Complete", "status": "True"}
            if succeeded
            else {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": message or "Job has reached the specified backoff limit",
            }
        )
        await self.set_status(
            f"{JOBS}/{name}",
            {
                "startTime": "2026-12-01T09:59:48Z",
                "completionTime": now if succeeded else None,
                "conditions": [condition],
                "succeeded" if succeeded else "failed": 1,
            },
        )

    async def deployment(self, name: str) -> dict[str, Any]:
        found = await self.get(f"{DEPLOYMENTS}/{name}")
        assert found is not None
        return found

    async def roll(self, name: str, *, available: bool = True) -> None:
        """Play the Deployment controller: every replica updated and available."""
        deployment = await self.deployment(name)
        replicas = int(deployment["spec"].get("replicas", 1))
        await self.set_status(
            f"{DEPLOYMENTS}/{name}",
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas if available else 0,
                "readyReplicas": replicas if available else 0,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ],
            },
        )

    async def image_of(self, name: str) -> str | None:
        deployment = await self.deployment(name)
        image = deployment["spec"]["template"]["spec"]["containers"][0].get("image")
        return str(image) if image is not None else None

    async def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        listed = await self.get("/api/v1/namespaces/taskhub/events")
        assert listed is not None
        return [e for e in listed["items"] if reason is None or e.get("reason") == reason]

    async def until_events(self, reason: str, count: int = 1) -> list[dict[str, Any]]:
        """kopf posts Events from a queue of its own, a moment after the pass."""

        async def check() -> list[dict[str, Any]] | None:
            found = await self.events(reason)
            return found if len(found) >= count else None

        return await eventually(check, 10, f"{count} Event(s) {reason}")  # type: ignore[no-any-return]


@pytest.fixture
async def cluster(apiserver: ApiServer) -> AsyncIterator[Cluster]:
    handle = Cluster(apiserver)
    yield handle
    await handle.close()


def deployment(name: str, image: str | None, replicas: int = 2) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name.removeprefix("taskhub-"), "args": ["api"]}
    if image is not None:
        container["image"] = image
    labels = {"app.kubernetes.io/name": "taskhub", "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def taskhub(image: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": image,
        "migrations": {
            "enabled": True,
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "serviceAccountName": "taskhub",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "migrate",
                            "env": [
                                {"name": "TASKHUB_DB__URL", "value": "postgresql+asyncpg://db"}
                            ],
                        }
                    ],
                }
            },
        },
        "deployments": [{"name": "taskhub-api"}, {"name": "taskhub-relay"}],
    }
    body.update(spec)
    return {
        "apiVersion": "taskhub.io/v1alpha1",
        "kind": "TaskHub",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": body,
    }


@contextlib.asynccontextmanager
async def running_operator(namespace: str = NS) -> AsyncIterator[KopfRunner]:
    """The real operator in its own thread and loop; entered and left off the
    test's loop, which serves the API server meanwhile."""
    args = ["run", "--standalone", "--verbose", "--namespace", namespace]
    runner = KopfRunner(
        [*args, "-m", "taskhub_operator.handlers"],
        timeout=60,
    )
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None, runner.output


@pytest.fixture
async def operator(apiserver: ApiServer) -> AsyncIterator[KopfRunner]:
    async with running_operator() as runner:
        yield runner


def credentials_secret(name: str = "taskhub-rabbitmq-default-user") -> dict[str, Any]:
    def encoded(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {"username": encoded("guest"), "password": encoded("guest")},
    }
