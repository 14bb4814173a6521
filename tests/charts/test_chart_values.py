"""values.schema.json rejects bad values with clear messages; values.yaml is
documented and holds no secret."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml
from chart_helpers import CHART_DIR, chart, render

RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "100m", "memory": "128Mi"},
}


def group(**overrides: Any) -> dict[str, Any]:
    return {
        "queues": ["q"],
        "replicas": 1,
        "resources": RESOURCES,
        "egress": {"smtp": False, "webhooks": False},
        **overrides,
    }


SCHEMA_ERRORS = [
    pytest.param(
        {"api": {"replicas": 0}}, "at '/api/replicas': minimum: got 0, want 1", id="api-replicas-0"
    ),
    pytest.param(
        {"relay": {"replicas": 0}},
        "at '/relay/replicas': minimum: got 0, want 1",
        id="relay-replicas-0",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(replicas=0)}}},
        "at '/workers/groups/bulk/replicas': minimum: got 0, want 1",
        id="worker-replicas-0",
    ),
    pytest.param(
        {"postgresql": {"instances": 0}},
        "at '/postgresql/instances': minimum: got 0, want 1",
        id="pg-instances-0",
    ),
    pytest.param(
        {"api": {"replicas": "2"}},
        "at '/api/replicas': got string, want integer",
        id="replicas-string",
    ),
    pytest.param(
        {"ingress": {"enabled": "yes"}},
        "at '/ingress/enabled': got string, want boolean",
        id="bool-string",
    ),
    pytest.param(
        {"ingress": {"paths": "/api"}},
        "at '/ingress/paths': got string, want array",
        id="list-string",
    ),
    pytest.param(
        {"replicas": 2}, "at '': additional properties 'replicas' not allowed", id="unknown-top-key"
    ),
    pytest.param(
        {"api": {"replica": 2}},
        "at '/api': additional properties 'replica' not allowed",
        id="unknown-key",
    ),
    pytest.param(
        {"postgresql": {"pooler": {"poolMode": "session"}}},
        "at '/postgresql/pooler': additional properties 'poolMode' not allowed",
        id="unknown-nested-key",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(queue=["q"])}}},
        "at '/workers/groups/bulk': additional properties 'queue' not allowed",
        id="unknown-group-key",
    ),
    pytest.param(
        {"workers": {"groups": {"Bulk_Jobs": group()}}},
        "invalid propertyName 'Bulk_Jobs'",
        id="group-name",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(resources={"requests": RESOURCES["requests"]})}}},
        "at '/workers/groups/bulk/resources': missing property 'limits'",
        id="limits-required",
    ),
    pytest.param(
        {"image": {"pullPolicy": "Sometimes"}},
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        id="enum",
    ),
    pytest.param(
        {"api": {"autoscaling": {"targetCPUUtilizationPercentage": 170}}},
        "at '/api/autoscaling/targetCPUUtilizationPercentage': maximum: got 170, want 100",
        id="percentage",
    ),
    pytest.param(
        {"operator": {"enable": True}},
        "at '/operator': additional properties 'enable' not allowed",
        id="unknown-operator-key",
    ),
    pytest.param(
        {"operator": {"rabbitmq": {"managementUrl": "amqp://broker:5672"}}},
        "at '/operator/rabbitmq/managementUrl': 'amqp://broker:5672' does not match pattern",
        id="management-url",
    ),
    pytest.param(
        {"operator": {"interval": 0}},
        "at '/operator/interval': exclusiveMinimum: got 0, want 0",
        id="operator-interval",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(autoscaling={"minReplicas": 1})}}},
        "at '/workers/groups/bulk/autoscaling': missing property 'maxReplicas'",
        id="autoscaling-max-required",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(autoscaling={"enabled": True})}}},
        "at '/workers/groups/bulk/autoscaling': missing property 'maxReplicas'",
        id="autoscaling-enabled-needs-max",
    ),
    pytest.param(
        {"workers": {"groups": {"bulk": group(autoscaling={"maxReplicas": 3, "cooldown": 9})}}},
        "at '/workers/groups/bulk/autoscaling': additional properties 'cooldown' not allowed",
        id="autoscaling-unknown-key",
    ),
    pytest.param(
        {
            "workers": {
                "groups": {
                    "bulk": group(autoscaling={"maxReplicas": 3, "targetMessagesPerReplica": 0})
                }
            }
        },
        "at '/workers/groups/bulk/autoscaling/targetMessagesPerReplica': minimum: got 0, want 1",
        id="autoscaling-target",
    ),
    pytest.param(
        {"tests": {"enabled": "yes"}},
        "at '/tests/enabled': got string, want boolean",
        id="tests-enabled",
    ),
]


class TestSchemaRejects:
    @pytest.mark.parametrize(("values", "message"), SCHEMA_ERRORS)
    def test_render_fails_with_schema_message(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmValuesError) as excinfo:
            render(values)
        assert message in str(excinfo.value)

    @pytest.mark.parametrize(("values", "message"), SCHEMA_ERRORS[:3])
    def test_lint_reports_the_same(self, values: dict[str, Any], message: str) -> None:
        report = helm.lint(CHART_DIR, values, strict=True)
        assert any(message in e for e in report["errors"]), report["errors"]


class TestTemplateGuards:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"image": {"tag": "latest"}}, 'image.tag must not be "latest"'),
            ({"redis": {"image": {"tag": "latest"}}}, 'redis.image.tag must not be "latest"'),
            ({"postgresql": {"enabled": False}}, "set externalDatabase.existingSecret"),
            ({"rabbitmq": {"enabled": False}}, "set externalBroker.existingSecret"),
            ({"redis": {"enabled": False}}, "set externalRedis.existingSecret"),
            ({"bootstrapAdmin": {"enabled": True}}, "set bootstrapAdmin.existingSecret"),
            (
                {"api": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}},
                "minReplicas must not exceed api.autoscaling.maxReplicas",
            ),
        ],
    )
    def test_render_fails_with_message(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmRenderError) as excinfo:
            render(values)
        assert message in str(excinfo.value)


class TestSchemaShape:
    def schema(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
        return loaded

    def test_every_object_with_properties_is_closed(self) -> None:
        open_objects: list[str] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                if "properties" in node and node.get("additionalProperties") is not False:
                    open_objects.append(path)
                for key, value in node.items():
                    # An `if` is a condition on the (closed) object, not a shape.
                    if key != "if":
                        walk(value, f"{path}/{key}")
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    walk(value, f"{path}/{index}")

        walk(self.schema(), "#")
        assert open_objects == []

    def test_defaults_are_valid(self) -> None:
        chart().validate_schema({})

    def test_every_values_key_is_in_the_schema(self) -> None:
        properties = self.schema()["properties"]
        assert set(chart().values) <= set(properties)


class TestValuesFile:
    text = (CHART_DIR / "values.yaml").read_text()

    def test_top_level_keys_are_documented(self) -> None:
        lines = self.text.splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^[A-Za-z]\w*:", line):
                previous = lines[index - 1].strip() if index else ""
                assert previous.startswith("#"), f"undocumented top-level key: {line}"

    def test_no_plaintext_secrets(self) -> None:
        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    is_reference = key.startswith("existing")
                    credential = re.search(r"password$|secret$|token$", key, re.IGNORECASE)
                    if credential and not is_reference and isinstance(value, str):
                        assert value == "", f"{path}.{key} holds a literal credential"
                    walk(value, f"{path}.{key}")
            elif isinstance(node, list):
                for item in node:
                    walk(item, path)
            elif isinstance(node, str):
                assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", node), f"credentials in {path}"

        walk(yaml.safe_load(self.text), "")

    def test_credentials_only_via_existing_secrets(self) -> None:
        values = yaml.safe_load(self.text)
        for section in (
            "auth",
            "bootstrapAdmin",
            "smtp",
            "externalDatabase",
            "externalBroker",
            "externalRedis",
        ):
            assert "existingSecret" in values[section], section
        assert values["redis"]["auth"]["existingSecret"] == ""
