"""Every profile renders, lints clean, and every core object is valid Kubernetes."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest
from chart_helpers import CHART_DIR, NAMESPACE, PROFILES, Rendered, load_values
from kubernetes_validate.utils import all_versions, latest_version

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest the installed kubernetes-validate knows.
OLDEST = "1.29.0"
NEWEST = latest_version()
KUBE_VERSIONS = [OLDEST, NEWEST]

# API groups served by operators, validated against their CRDs instead
# (test_chart_crds.py, and test_chart_taskhub.py for our own).
CRD_GROUPS = (
    "postgresql.cnpg.io",
    "rabbitmq.com",
    "k8s.keycloak.org",
    "monitoring.coreos.com",
    "taskhub.io",
)


def is_custom_resource(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0] in CRD_GROUPS


class TestKubernetesVersions:
    def test_both_versions_are_shipped(self) -> None:
        shipped = set(all_versions())
        assert OLDEST in shipped
        assert NEWEST in shipped
        assert OLDEST != NEWEST

    def test_chart_declares_oldest_version(self) -> None:
        with helm.Chart.load(CHART_DIR) as loaded:
            assert loaded.metadata["kubeVersion"] == f">={OLDEST}-0"


class TestLint:
    @pytest.mark.parametrize("profile", sorted(PROFILES))
    @pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
    def test_lint_strict_is_clean(self, profile: str, kube_version: str) -> None:
        report = helm.lint(
            CHART_DIR,
            load_values(PROFILES[profile]),
            strict=True,
            namespace=NAMESPACE,
            kube_version=f"v{kube_version}",
        )
        assert report["errors"] == []
        # strict: warnings count too; only informational messages may remain.
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


class TestRender:
    def test_renders_objects(self, rendered: Rendered) -> None:
        kinds = {o["kind"] for o in rendered.objects}
        assert {"Deployment", "Service", "NetworkPolicy", "ServiceAccount"} <= kinds

    def test_every_object_has_kind_name_and_labels(self, rendered: Rendered) -> None:
        for obj in rendered.objects:
            meta = obj["metadata"]
            assert meta["name"], obj
            labels = meta.get("labels", {})
            assert labels.get("app.kubernetes.io/managed-by") == "Helm", meta["name"]
            assert labels.get("app.kubernetes.io/instance") == "taskhub", meta["name"]

    def test_notes_tell_how_to_reach_the_api(self, rendered: Rendered) -> None:
        assert "port-forward svc/taskhub-api" in rendered.notes
        if rendered.values["ingress"]["enabled"]:
            assert f"://{rendered.values['ingress']['host']}/health/ready" in rendered.notes

    @pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
    def test_core_objects_validate_strictly(self, rendered: Rendered, kube_version: str) -> None:
        errors = []
        for obj in rendered.objects:
            if is_custom_resource(obj):
                continue
            try:
                kubernetes_validate.validate(obj, kube_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        assert errors == []

    def test_validator_catches_an_invalid_object(self) -> None:
        # Guards the test above against silently validating nothing.
        bad = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {"replicas": "two", "unknownField": 1},
        }
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, OLDEST, strict=True)
