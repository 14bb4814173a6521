"""`helm uninstall` never leaves the TaskHub hanging on kopf's finalizer: the
pre-delete hook deletes it while the operator still runs, and drops the
finalizer itself if the operator does not release it in time. The hook's script
runs here against the Kubernetes API emulator of the operator tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.charts.chart_helpers import CHART_DIR, rendered_profile
from tests.operator.apiserver import ApiServer, serving

SCRIPT = CHART_DIR / "files" / "delete-taskhub.py"
TASKHUBS = "/apis/taskhub.io/v1alpha1/namespaces/taskhub/taskhubs"
HOOK = "taskhub-operator-uninstall"


def hook_objects() -> dict[str, dict[str, Any]]:
    rendered = rendered_profile("defaults")
    return {
        o["kind"]: o
        for o in rendered.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator-uninstall"
    }


class TestHookObjects:
    def test_pre_delete_hook_before_the_release_is_deleted(self) -> None:
        objects = hook_objects()
        assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "Job"}
        for kind, obj in objects.items():
            annotations = obj["metadata"]["annotations"]
            assert annotations["helm.sh/hook"] == "pre-delete", kind
            assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"], kind
        weights = {
            k: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, o in objects.items()
        }
        assert weights["Job"] > max(weights[k] for k in ("ServiceAccount", "Role", "RoleBinding"))

    def test_the_role_covers_only_this_release_s_taskhub(self) -> None:
        (rule,) = hook_objects()["Role"]["rules"]
        assert rule == {
            "apiGroups": ["taskhub.io"],
            "resources": ["taskhubs"],
            "resourceNames": ["taskhub"],
            "verbs": ["get", "delete", "patch"],
        }

    def test_the_job_runs_the_script_of_the_chart(self) -> None:
        container = hook_objects()["Job"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["python", "-c"]
        assert container["command"][2].strip() == SCRIPT.read_text().strip()
        assert container["args"] == ["taskhub", "taskhub", "60"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    resources = {"taskhub.io/v1alpha1/taskhubs": {"kind": "TaskHub", "subresources": ["status"]}}
    async with serving(resources, tmp_path / "kubeconfig") as server:
        yield server


async def run(api: ApiServer, tmp_path: Path, wait: float) -> tuple[int, str]:
    account = tmp_path / "serviceaccount"
    account.mkdir(exist_ok=True)
    (account / "token").write_text("test-token\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "taskhub",
        "taskhub",
        str(wait),
        env={"SERVICE_ACCOUNT_DIR": str(account), "KUBERNETES_API": str(api.url).rstrip("/")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def create_taskhub(http: httpx.AsyncClient) -> None:
    body = {
        "apiVersion": "taskhub.io/v1alpha1",
        "kind": "TaskHub",
        "metadata": {
            "name": "taskhub",
            "namespace": "taskhub",
            "finalizers": ["taskhub.io/operator"],
        },
        "spec": {"image": "x:1"},
    }
    assert (await http.post(TASKHUBS, json=body)).status_code < 300


class TestScript:
    async def test_the_operator_releases_it(self, api: ApiServer, tmp_path: Path) -> None:
        async with httpx.AsyncClient(base_url=str(api.url)) as http:
            await create_taskhub(http)

            async def operator() -> None:  # releases the finalizer once deleted
                while True:
                    body = (await http.get(f"{TASKHUBS}/taskhub")).json()
                    if body.get("metadata", {}).get("deletionTimestamp"):
                        await http.patch(
                            f"{TASKHUBS}/taskhub",
                            json={"metadata": {"finalizers": None}},
                            headers={"content-type": "application/merge-patch+json"},
                        )
                        return
                    await asyncio.sleep(0.1)

            releasing = asyncio.create_task(operator())
            code, out = await run(api, tmp_path, wait=20)
            await releasing
            assert (code, "released by the operator" in out) == (0, True), out
            assert (await http.get(f"{TASKHUBS}/taskhub")).status_code == 404

    async def test_without_an_operator_it_drops_the_finalizer(
        self, api: ApiServer, tmp_path: Path
    ) -> None:
        async with httpx.AsyncClient(base_url=str(api.url)) as http:
            await create_taskhub(http)
            code, out = await run(api, tmp_path, wait=1)
            assert (code, "finalizers removed" in out) == (0, True), out
            assert (await http.get(f"{TASKHUBS}/taskhub")).status_code == 404

    async def test_nothing_to_delete(self, api: ApiServer, tmp_path: Path) -> None:
        code, out = await run(api, tmp_path, wait=1)
        assert (code, "none to delete" in out) == (0, True), out
