"""tracing.enabled: every process that handles requests or jobs exports traces to the
OTLP collector (OTEL_* variables), which the NetworkPolicies let it reach; off, no
container carries an OTEL_ variable."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python import HelmError
from tests.charts.chart_helpers import parse, render

ON = {"tracing": {"enabled": True, "endpoint": "http://otel-collector.monitoring:4318"}}
TRACED = {"api", "worker", "relay", "beat"}


def objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return parse(render(values))[0]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"].get("app.kubernetes.io/component"))


def otel_env(obj: dict[str, Any]) -> dict[str, str]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: e.get("value", "")
        for c in containers
        for e in c.get("env", [])
        if e["name"].startswith("OTEL_")
    }


class TestTracing:
    def test_off_by_default(self) -> None:
        rendered = objects({})
        assert not [o for o in rendered if o["kind"] == "Deployment" and otel_env(o)]
        assert not [o for o in rendered if o["metadata"]["name"].endswith("-tracing")]

    def test_on_every_process_exports_to_the_collector(self) -> None:
        rendered = objects(ON)
        deployments = [o for o in rendered if o["kind"] == "Deployment"]
        traced = [d for d in deployments if component(d) in TRACED]
        assert {component(d) for d in traced} == TRACED
        for deployment in traced:
            env = otel_env(deployment)
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ON["tracing"]["endpoint"]
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
            assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
        # The migration pod (the TaskHub's template) has nothing to trace.
        (taskhub,) = [o for o in rendered if o["kind"] == "TaskHub"]
        template = taskhub["spec"]["migrations"]["template"]["spec"]
        assert not [
            e
            for c in template["containers"]
            for e in c.get("env", [])
            if e["name"].startswith("OTEL_")
        ]

    def test_the_collector_is_reachable(self) -> None:
        (policy,) = [o for o in objects(ON) if o["metadata"]["name"] == "taskhub-tracing"]
        selector = policy["spec"]["podSelector"]["matchExpressions"][0]
        assert set(selector["values"]) == TRACED
        (rule,) = policy["spec"]["egress"]
        assert rule["ports"] == [{"port": 4318, "protocol": "TCP"}]
        assert rule["to"][0]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
        }

    def test_enabled_needs_an_endpoint(self) -> None:
        with pytest.raises(HelmError, match=r"tracing\.enabled needs tracing\.endpoint"):
            render({"tracing": {"enabled": True}})
