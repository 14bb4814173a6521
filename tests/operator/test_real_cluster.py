"""The opt-in tier: the same gate on a real cluster, with real Job and Deployment
controllers. Set TASKHUB_TEST_KUBECONFIG to the kubeconfig of a disposable
cluster (minikube, kind); it creates and deletes its own namespace, and applies
the chart's CRD."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskhub_operator import kube
from tests.conftest import ROOT
from tests.operator.conftest import running_operator
from tests.support.wait import eventually

KUBECONFIG = os.environ.get("TASKHUB_TEST_KUBECONFIG", "")
CRD = ROOT / "charts" / "taskhub" / "crds" / "taskhubs.taskhub.io.yaml"
OLD, NEW = "busybox:1.36", "busybox:1.37"

pytestmark = pytest.mark.skipif(
    not KUBECONFIG or not Path(KUBECONFIG).is_file(),
    reason="no real cluster: set TASKHUB_TEST_KUBECONFIG to run the operator against one",
)


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[kube.Kube, str]]:
    monkeypatch.setenv("KUBECONFIG", KUBECONFIG)
    import kopf

    settings = kopf.OperatorSettings()
    api = kube.Kube(lambda: kube.login(settings=settings))
    namespace = f"taskhub-test-{uuid.uuid4().hex[:6]}"
    try:
        await api.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            yaml.safe_load(CRD.read_text()),
        )
    except kube.KubeError as exc:
        if not exc.conflict:
            raise
    await api.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    try:
        yield api, namespace
    finally:
        await api.request("DELETE", f"/api/v1/namespaces/{namespace}")
        await api.close()


def sleeper(namespace: str) -> dict[str, Any]:
    labels = {"app": "sleeper"}
    return {
        "metadata": {"name": "sleeper", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "sleeper", "image": OLD, "command": ["sleep", "3600"]}]
                },
            },
        },
    }


async def test_a_rollout_waits_for_its_migration_on_a_real_cluster(
    client: tuple[kube.Kube, str],
) -> None:
    api, namespace = client
    await api.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", sleeper(namespace))
    body = {
        "apiVersion": "taskhub.io/v1alpha1",
        "kind": "TaskHub",
        "metadata": {"name": "taskhub", "namespace": namespace},
        "spec": {
            "image": OLD,
            "migrations": {
                "template": {
                    # `sh -c 'exit 0' migrate --phase ...`: a migration that succeeds.
                    "spec": {"containers": [{"name": "migrate", "command": ["sh", "-c", "exit 0"]}]}
                }
            },
            "deployments": [{"name": "sleeper"}],
        },
    }
    path = f"/apis/taskhub.io/v1alpha1/namespaces/{namespace}/taskhubs"
    await api.create(path, body)

    async def current(image: str) -> bool:
        status = (await api.get(f"{path}/taskhub")).get("status") or {}
        return (
            status.get("currentImage") == image
            and status.get("rollout", {}).get("phase") == "Complete"
        )

    async with running_operator(namespace):
        await eventually(lambda: current(OLD), 300, f"{OLD} rolled out")
        await api.merge_patch(f"{path}/taskhub", {"spec": {"image": NEW}})
        await eventually(lambda: current(NEW), 300, f"{NEW} rolled out")
    jobs = await api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")
    assert len(jobs["items"]) == 4  # expand and contract, per image
