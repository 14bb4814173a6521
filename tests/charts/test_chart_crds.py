"""Operator custom resources validate against the operators' own CRD schemas.

The CRDs are shared data (../shared/crds or $TASKHUB_CRD_DIR), never copied
into the project. A CRD's structural schema lets unknown fields through and
the API server prunes them silently, so a typo would vanish without an error;
these tests treat unknown fields as errors, as `kubectl --validate=strict`.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml
from chart_helpers import CRD_DIR, Rendered, forbid_unknown_fields, parse, render

CRD_FILES = {
    ("postgresql.cnpg.io", "Cluster"): "postgresql.cnpg.io_clusters.yaml",
    ("postgresql.cnpg.io", "Pooler"): "postgresql.cnpg.io_poolers.yaml",
    ("postgresql.cnpg.io", "ScheduledBackup"): "postgresql.cnpg.io_scheduledbackups.yaml",
    ("rabbitmq.com", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.yaml",
    ("k8s.keycloak.org", "Keycloak"): "keycloaks.k8s.keycloak.org-v1.yml",
    ("k8s.keycloak.org", "KeycloakRealmImport"): "keycloakrealmimports.k8s.keycloak.org-v1.yml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


@cache
def validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    path = CRD_DIR / CRD_FILES[(group, kind)]
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == kind
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {group}/{version} is not served (have {sorted(served)})"
    schema = forbid_unknown_fields(served[version]["schema"]["openAPIV3Schema"])
    # OpenAPI v3.0 schemas are draft-4 flavoured (boolean exclusiveMinimum...).
    return jsonschema.Draft4Validator(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    group, version = obj["apiVersion"].split("/")
    found = validator(group, obj["kind"], version).iter_errors(obj)
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
        for e in found
    ]


def custom_resources(rendered: Rendered) -> list[dict[str, Any]]:
    groups = {g for g, _ in CRD_FILES}
    return [o for o in rendered.objects if o["apiVersion"].split("/")[0] in groups]


class TestCrdDirectory:
    def test_every_crd_file_exists(self) -> None:
        missing = [f for f in CRD_FILES.values() if not (CRD_DIR / f).is_file()]
        assert missing == [], f"missing in {CRD_DIR}"


class TestCustomResources:
    def test_validate_against_crds(self, rendered: Rendered) -> None:
        errors = [e for obj in custom_resources(rendered) for e in crd_errors(obj)]
        assert errors == []

    def test_every_custom_kind_has_a_crd(self, rendered: Rendered) -> None:
        for obj in custom_resources(rendered):
            assert (obj["apiVersion"].split("/")[0], obj["kind"]) in CRD_FILES

    def test_full_profile_covers_every_operator_kind(self, all_rendered: list[Rendered]) -> None:
        rendered_kinds = {
            (o["apiVersion"].split("/")[0], o["kind"])
            for r in all_rendered
            for o in custom_resources(r)
        }
        assert rendered_kinds == set(CRD_FILES)

    @pytest.mark.parametrize(
        ("obj", "needle"),
        [
            (
                {
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "Pooler",
                    "metadata": {"name": "p"},
                    "spec": {
                        "cluster": {"name": "c"},
                        "type": "rw",
                        "pgbouncer": {"poolMode": "statement"},
                    },
                },
                "statement",
            ),
            (
                {
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "Cluster",
                    "metadata": {"name": "c"},
                    "spec": {"instances": 2, "storage": {"size": "1Gi"}, "instancez": 3},
                },
                "instancez",
            ),
        ],
    )
    def test_invalid_resources_are_caught(self, obj: dict[str, Any], needle: str) -> None:
        errors = crd_errors(obj)
        assert any(needle in e for e in errors), errors


class TestPlatformShape:
    """What the issue asks of the operator resources."""

    def test_postgresql(self, rendered: Rendered) -> None:
        if not rendered.values["postgresql"]["enabled"]:
            assert rendered.of_kind("Cluster", "Pooler") == []
            return
        cluster = rendered.get("Cluster", "taskhub-pg")
        assert cluster is not None
        assert cluster["spec"]["instances"] == rendered.values["postgresql"]["instances"]
        poolers = {p["spec"]["type"]: p for p in rendered.of_kind("Pooler")}
        assert set(poolers) == {"rw", "ro"}
        for pooler in poolers.values():
            assert pooler["spec"]["cluster"]["name"] == "taskhub-pg"
            assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"

    def test_default_postgresql_has_a_streaming_replica(self, all_rendered: list[Rendered]) -> None:
        defaults = next(r for r in all_rendered if r.profile == "defaults")
        cluster = defaults.get("Cluster", "taskhub-pg")
        assert cluster is not None
        assert cluster["spec"]["instances"] == 2

    def test_keycloak_realm(self, rendered: Rendered) -> None:
        imports = rendered.of_kind("KeycloakRealmImport")
        if not rendered.values["keycloak"]["enabled"]:
            assert imports == []
            return
        (realm_import,) = imports
        keycloak = rendered.get("Keycloak", realm_import["spec"]["keycloakCRName"])
        assert keycloak is not None
        realm = realm_import["spec"]["realm"]
        assert realm["realm"] == "taskhub"
        assert {r["name"] for r in realm["roles"]["realm"]} == {"admin", "user", "viewer"}
        client_ids = {c["clientId"] for c in realm["clients"]}
        assert rendered.values["auth"]["oidc"]["audience"] in client_ids

    def test_rabbitmq(self, rendered: Rendered) -> None:
        clusters = rendered.of_kind("RabbitmqCluster")
        assert len(clusters) == (1 if rendered.values["rabbitmq"]["enabled"] else 0)

    def test_rabbitmq_exposes_the_management_api(self, rendered: Rendered) -> None:
        """The TaskHub operator reads queue depth from the management API on
        15672 of the cluster's Service. The plugin is always on (the CRD calls
        rabbitmq_management essential) and the Service has the port unless
        non-TLS listeners are disabled or the Service is overridden."""
        schema = validator("rabbitmq.com", "RabbitmqCluster", "v1beta1").schema
        plugins = schema["properties"]["spec"]["properties"]["rabbitmq"]["properties"][
            "additionalPlugins"
        ]
        assert "essential plugins: rabbitmq_management" in plugins["description"]
        for cluster in rendered.of_kind("RabbitmqCluster"):
            spec = cluster["spec"]
            assert spec.get("tls", {}).get("disableNonTLSListeners") is not True
            assert "service" not in spec.get("override", {})
            assert spec.get("service", {}).get("type", "ClusterIP") == "ClusterIP"
            config = spec.get("rabbitmq", {}).get("additionalConfig", "")
            assert not re.search(r"^\s*management\.(tcp|listener)\.", config, re.MULTILINE)

    def test_a_disabled_management_listener_is_caught(self) -> None:
        objects, _ = parse(
            render({"rabbitmq": {"additionalConfig": "management.tcp.port = 15999"}})
        )
        (cluster,) = [o for o in objects if o["kind"] == "RabbitmqCluster"]
        config = cluster["spec"]["rabbitmq"]["additionalConfig"]
        assert re.search(r"^\s*management\.(tcp|listener)\.", config, re.MULTILINE)
