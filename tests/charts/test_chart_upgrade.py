"""`helm upgrade` in operator mode, rendered the way Helm renders it against a
cluster: `lookup` is answered by the project's Kubernetes API emulator
(tests/operator/apiserver.py) holding what release 1 created. The managed
Deployments render the image they run live (taskhub.workloadImage), so an
upgrade changes only what the operator reads (the TaskHub's spec.image) and the
operator itself: Helm never rolls them ahead of the migration, nor undoes an
image the operator set."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import kmock
import pytest
from chart_helpers import (
    NAMESPACE,
    PROFILES,
    RELEASE,
    Manifest,
    chart,
    load_values,
    parse,
    render,
)
from tests.operator.apiserver import ApiServer, serving

from taskhub_operator.rollout import image_patch

Key = tuple[str, str]
Diff = dict[str, tuple[Any, Any]]

DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
TASKHUBS = f"/apis/taskhub.io/v1alpha1/namespaces/{NAMESPACE}/taskhubs"
# What release 1 creates and the chart looks up.
RESOURCES = {
    "apps/v1/deployments": {"kind": "Deployment", "subresources": {"status", "scale"}},
    "taskhub.io/v1alpha1/taskhubs": {"kind": "TaskHub", "subresources": {"status"}},
}
CONTAINER_IMAGE = "spec.template.spec.containers[0].image"
ABSENT = "<absent>"

OPERATOR_PROFILES = [
    p
    for p in sorted(PROFILES)
    if chart().merge_values(load_values(PROFILES[p]))["operator"]["enabled"]
]


def with_tag(profile: str, tag: str, **extra: Any) -> dict[str, Any]:
    values = copy.deepcopy(load_values(PROFILES[profile]))
    values.setdefault("image", {})["tag"] = tag
    values.update(extra)
    return values


def image(values: dict[str, Any]) -> str:
    repository = chart().merge_values(values)["image"]["repository"]
    return f"{repository}:{values['image']['tag']}"


def by_key(manifests: dict[str, str]) -> dict[Key, Manifest]:
    objects, _ = parse(manifests)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def managed(objects: dict[Key, Manifest]) -> set[str]:
    (spec,) = [o["spec"] for (kind, _), o in objects.items() if kind == "TaskHub"]
    return {d["name"] for d in spec["deployments"]} | {
        w["deployment"] for w in spec.get("workers", [])
    }


def images(deployment: Manifest) -> list[str]:
    return [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]


def differences(old: Any, new: Any, path: str = "") -> Diff:
    """Every leaf that differs, by its field path (spec.containers[0].image)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: Diff = {}
        for key in sorted(old.keys() | new.keys()):
            found |= differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{path}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = {}
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found |= differences(a, b, f"{path}[{index}]")
        return found
    return {} if old == new else {path.removeprefix("."): (old, new)}


def release_diff(before: dict[Key, Manifest], after: dict[Key, Manifest]) -> dict[Key, Diff]:
    assert set(before) == set(after)
    return {key: found for key in sorted(before) if (found := differences(before[key], after[key]))}


def upgrade_diff(before: dict[Key, Manifest], old: str, new: str) -> dict[Key, Diff]:
    """What an upgrade from `old` to `new` may change: the TaskHub's
    spec.image, the operator's own image, and the hooks' images (the `helm test`
    Pod and the uninstall Job: created afresh when they run, never merged)."""
    allowed: dict[Key, Diff] = {
        ("TaskHub", "taskhub"): {"spec.image": (old, new)},
        ("Deployment", "taskhub-operator"): {CONTAINER_IMAGE: (old, new)},
    }
    if ("Pod", "taskhub-test") in before:
        allowed[("Pod", "taskhub-test")] = {"spec.containers[0].image": (old, new)}
    if ("Job", "taskhub-operator-uninstall") in before:
        allowed[("Job", "taskhub-operator-uninstall")] = {CONTAINER_IMAGE: (old, new)}
    return allowed


@dataclass
class Cluster:
    """The emulator as a cluster: what a release created, and Helm's view of it."""

    api: ApiServer
    http: httpx.AsyncClient
    kubeconfig: Path

    async def holds(self, objects: dict[Key, Manifest]) -> None:
        """Create what a release created (its Deployments and TaskHub)."""
        for (kind, _), obj in objects.items():
            path = {"Deployment": DEPLOYMENTS, "TaskHub": TASKHUBS}.get(kind)
            if path is not None:
                response = await self.http.post(path, json=obj)
                assert response.status_code < 300, response.text

    async def deployment(self, name: str) -> Manifest:
        response = await self.http.get(f"{DEPLOYMENTS}/{name}")
        assert response.status_code == 200, response.text
        found: Manifest = response.json()
        return found

    async def operator_sets(self, name: str, image: str) -> None:
        """The operator's own JSON patch (taskhub_operator.rollout.image_patch)."""
        patch = image_patch(await self.deployment(name), image, None)
        response = await self.http.patch(
            f"{DEPLOYMENTS}/{name}",
            json=patch,
            headers={"content-type": "application/json-patch+json"},
        )
        assert response.status_code == 200, response.text

    async def render(self, values: dict[str, Any], *, revision: int) -> dict[Key, Manifest]:
        """`helm install` (revision 1) or `helm upgrade`, cluster-aware: off the
        test's loop, which serves the emulator meanwhile."""
        with helm.Config(kubeconfig_path=self.kubeconfig, namespace=NAMESPACE) as config:
            manifests = await asyncio.to_thread(
                config.render,
                chart(),
                values,
                name=RELEASE,
                namespace=NAMESPACE,
                revision=revision,
                is_install=revision == 1,
                is_upgrade=revision > 1,
            )
        return by_key(manifests)

    def looked_up(self) -> set[str]:
        """Deployments Helm asked for by name."""
        return {
            r.url.path.rsplit("/", 1)[-1]
            for r in self.api
            if r.method == kmock.method.GET
            and r.headers.get("User-Agent", "").startswith("Helm/")
            and r.url.path.startswith(f"{DEPLOYMENTS}/")
        }


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    kubeconfig = tmp_path / "kubeconfig"
    async with (
        serving(RESOURCES, kubeconfig) as api,
        httpx.AsyncClient(base_url=str(api.url), timeout=10) as http,
    ):
        yield Cluster(api, http, kubeconfig)


class TestUpgrade:
    @pytest.mark.parametrize("profile", OPERATOR_PROFILES)
    async def test_only_the_taskhub_and_the_operator_change(
        self, cluster: Cluster, profile: str
    ) -> None:
        one, two = with_tag(profile, "1.3.2"), with_tag(profile, "1.4.0")
        old, new = image(one), image(two)
        before = by_key(render(one))
        await cluster.holds(before)

        after = await cluster.render(two, revision=2)

        assert release_diff(before, after) == upgrade_diff(before, old, new)
        names = managed(after)
        assert cluster.looked_up() == names
        for name in names:
            assert images(after[("Deployment", name)]) == [old], name

    async def test_the_image_the_operator_set_is_kept(self, cluster: Cluster) -> None:
        one, two = with_tag("defaults", "1.3.2"), with_tag("defaults", "1.4.0")
        old, new = image(one), image(two)
        patched = image(with_tag("defaults", "1.3.3"))
        before = by_key(render(one))
        await cluster.holds(before)
        await cluster.operator_sets("taskhub-api", patched)

        after = await cluster.render(two, revision=2)

        expected = upgrade_diff(before, old, new)
        expected[("Deployment", "taskhub-api")] = {CONTAINER_IMAGE: (old, patched)}
        assert release_diff(before, after) == expected


class TestReleaseImage:
    """Where the cluster holds no such Deployment or container, the release's image."""

    async def test_first_install(self, cluster: Cluster) -> None:
        values = with_tag("defaults", "1.3.2")
        installed = await cluster.render(values, revision=1)
        assert installed == by_key(render(values))
        assert cluster.looked_up() == managed(installed)
        for name in managed(installed):
            assert images(installed[("Deployment", name)]) == [image(values)], name

    async def test_a_new_worker_group(self, cluster: Cluster) -> None:
        one = with_tag("defaults", "1.3.2")
        await cluster.holds(by_key(render(one)))
        bulk = {
            "queues": ["bulk"],
            "replicas": 1,
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "100m", "memory": "128Mi"},
            },
            "egress": {"smtp": False, "webhooks": False},
            "autoscaling": {"enabled": False},
        }
        two = with_tag("defaults", "1.4.0", workers={"groups": {"bulk": bulk}})

        after = await cluster.render(two, revision=2)

        assert images(after[("Deployment", "taskhub-worker-bulk")]) == [image(two)]
        assert images(after[("Deployment", "taskhub-worker-webhooks")]) == [image(one)]

    async def test_a_container_of_another_name(self, cluster: Cluster) -> None:
        one, two = with_tag("defaults", "1.3.2"), with_tag("defaults", "1.4.0")
        before = by_key(render(one))
        renamed = copy.deepcopy(before[("Deployment", "taskhub-api")])
        renamed["spec"]["template"]["spec"]["containers"][0]["name"] = "server"
        await cluster.holds({**before, ("Deployment", "taskhub-api"): renamed})

        after = await cluster.render(two, revision=2)

        assert images(after[("Deployment", "taskhub-api")]) == [image(two)]
        assert images(after[("Deployment", "taskhub-relay")]) == [image(one)]

    async def test_operator_off_ignores_the_cluster(self, cluster: Cluster) -> None:
        one = with_tag("operator-off", "1.3.2")
        two = with_tag("operator-off", "1.4.0")
        await cluster.holds(by_key(render(one)))

        after = await cluster.render(two, revision=2)

        assert cluster.looked_up() == set()
        app = [
            o
            for (kind, _), o in after.items()
            if kind == "Deployment"
            and o["metadata"]["labels"]["app.kubernetes.io/component"]
            in ("api", "relay", "beat", "worker")
        ]
        assert len(app) >= 4
        for deployment in app:
            assert images(deployment) == [image(two)], deployment["metadata"]["name"]
