"""Scraping the API (port 9807), the relay (port 9809), beat (port 9810) and
RabbitMQ's per-object metrics: the container port and probes, the headless
Service, the ServiceMonitors, and the NetworkPolicy path; and the API's metrics
never behind its public Service or the Ingress."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from chart_helpers import Manifest, Rendered, selector_matches
from test_chart_networkpolicy import INGRESS_CONTROLLER, MONITORING_NS, Endpoint, allowed

PROMETHEUS = Endpoint({"app.kubernetes.io/name": "prometheus"}, MONITORING_NS)


@dataclass(frozen=True)
class Process:
    name: str  # the values key and the Deployment's suffix
    port: int
    neighbour: int  # another process's metrics port, closed to this pod

    @property
    def service(self) -> str:
        return f"taskhub-{self.name}-metrics"

    def deployment(self, rendered: Rendered) -> Manifest | None:
        return rendered.get("Deployment", f"taskhub-{self.name}")


PROCESSES = [Process("relay", 9809, 9808), Process("beat", 9810, 9809)]
each = pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)


@each
class TestProcessMetrics:
    def test_it_serves_metrics_on_its_port(self, rendered: Rendered, process: Process) -> None:
        deployment = process.deployment(rendered)
        assert (deployment is not None) == rendered.values[process.name]["enabled"]
        if deployment is None:
            return
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = {"name": "metrics", "containerPort": process.port, "protocol": "TCP"}
        assert port in container["ports"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}

    def test_a_headless_service_selects_its_pods(
        self, rendered: Rendered, process: Process
    ) -> None:
        deployment = process.deployment(rendered)
        service = rendered.get("Service", process.service)
        assert (service is None) == (deployment is None)
        if deployment is None or service is None:
            return
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pods)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": process.port, "targetPort": "metrics", "protocol": "TCP"}
        ]

    def test_a_service_monitor_scrapes_it(self, rendered: Rendered, process: Process) -> None:
        monitor = rendered.get("ServiceMonitor", process.service)
        enabled = rendered.values["metrics"]["serviceMonitor"]["enabled"]
        assert (monitor is not None) == (enabled and process.deployment(rendered) is not None)
        if monitor is None:
            return
        service = rendered.get("Service", process.service)
        assert service is not None
        matching = [
            s
            for s in rendered.of_kind("Service")
            if selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert matching == [service]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
        assert monitor["metadata"]["labels"].items() >= (
            rendered.values["metrics"]["serviceMonitor"]["labels"].items()
        )

    def test_only_monitoring_reaches_the_metrics_port(
        self, rendered: Rendered, process: Process
    ) -> None:
        deployment = process.deployment(rendered)
        if deployment is None or not rendered.values["networkPolicy"]["enabled"]:
            return
        pod = Endpoint(deployment["spec"]["template"]["metadata"]["labels"])
        assert allowed(rendered, PROMETHEUS, pod, process.port)
        assert not allowed(rendered, PROMETHEUS, pod, process.neighbour)
        assert not allowed(rendered, INGRESS_CONTROLLER, pod, process.port)


@each
def test_some_profile_renders_the_whole_path(
    all_rendered: list[Rendered], process: Process
) -> None:
    # So the conditional checks above ran in full at least once.
    assert any(
        r.get("ServiceMonitor", process.service) is not None
        and r.values["networkPolicy"]["enabled"]
        for r in all_rendered
    )


API_METRICS = 9807
API_SERVICE = "taskhub-api"
API_METRICS_SERVICE = "taskhub-api-metrics"


def _api(rendered: Rendered) -> tuple[Manifest, Manifest]:
    """The API Deployment and its container."""
    deployment = rendered.get("Deployment", API_SERVICE)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _exposes_metrics(service: Manifest) -> bool:
    return any(
        port.get("name") == "metrics"
        or port.get("targetPort") in ("metrics", API_METRICS)
        or port["port"] == API_METRICS
        for port in service["spec"]["ports"]
    )


class TestApiMetrics:
    def test_the_api_serves_metrics_on_a_port_of_its_own(self, rendered: Rendered) -> None:
        _, container = _api(rendered)
        assert container["args"][0] == "api"
        # `taskhub api --metrics-port`'s default: the chart passes no other.
        assert not [a for a in container["args"] if a.startswith("--metrics-port")]
        assert container["ports"] == [
            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "metrics", "containerPort": API_METRICS, "protocol": "TCP"},
        ]
        # The probes stay on the API's port.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "http"

    def test_the_api_service_has_no_metrics_port(self, rendered: Rendered) -> None:
        service = rendered.get("Service", API_SERVICE)
        assert service is not None
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        assert not _exposes_metrics(service)

    def test_no_ingress_backend_service_has_a_metrics_port(self, rendered: Rendered) -> None:
        ingresses = rendered.of_kind("Ingress")
        assert bool(ingresses) == rendered.values["ingress"]["enabled"]
        for ingress in ingresses:
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert not path["path"].startswith("/metrics"), path
                    backend = path["backend"]["service"]
                    assert backend["name"] != API_METRICS_SERVICE
                    assert backend["port"] == {"name": "http"}
                    service = rendered.get("Service", backend["name"])
                    assert service is not None, backend
                    assert not _exposes_metrics(service), service["metadata"]["name"]

    def test_a_headless_metrics_service_selects_the_api_pods(self, rendered: Rendered) -> None:
        deployment, _ = _api(rendered)
        service = rendered.get("Service", API_METRICS_SERVICE)
        assert service is not None
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pods)
        # Cluster-internal whatever api.service.type says; Prometheus reads its endpoints.
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": API_METRICS, "targetPort": "metrics", "protocol": "TCP"}
        ]

    def test_the_service_monitor_scrapes_the_metrics_service(self, rendered: Rendered) -> None:
        monitor = rendered.get("ServiceMonitor", API_SERVICE)
        assert (monitor is not None) == rendered.values["metrics"]["serviceMonitor"]["enabled"]
        if monitor is None:
            return
        matching = [
            s["metadata"]["name"]
            for s in rendered.of_kind("Service")
            if selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert matching == [API_METRICS_SERVICE]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
        # The job keeps the API Service's name, which the rules and dashboards select.
        assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": API_SERVICE}]
        assert monitor["metadata"]["labels"].items() >= (
            rendered.values["metrics"]["serviceMonitor"]["labels"].items()
        )

    def test_only_monitoring_reaches_the_api_metrics_port(self, rendered: Rendered) -> None:
        if not rendered.values["networkPolicy"]["enabled"]:
            return
        deployment, _ = _api(rendered)
        pod = Endpoint(deployment["spec"]["template"]["metadata"]["labels"])
        assert allowed(rendered, PROMETHEUS, pod, API_METRICS)
        assert not allowed(rendered, INGRESS_CONTROLLER, pod, API_METRICS)
        assert allowed(rendered, INGRESS_CONTROLLER, pod, 8000)
        # Prometheus has no business on the API's own port any more, nor on a worker's.
        assert not allowed(rendered, PROMETHEUS, pod, 8000)
        assert not allowed(rendered, PROMETHEUS, pod, 9808)


def test_some_profile_renders_the_whole_api_path(all_rendered: list[Rendered]) -> None:
    assert any(
        r.get("ServiceMonitor", API_SERVICE) is not None
        and r.values["networkPolicy"]["enabled"]
        and r.values["ingress"]["enabled"]
        for r in all_rendered
    )


class TestRabbitMQPerObjectMetrics:
    def test_the_broker_is_scraped_per_object(self, all_rendered: list[Rendered]) -> None:
        monitors = [
            m
            for r in all_rendered
            if r.values["rabbitmq"]["enabled"]
            for m in r.of_kind("ServiceMonitor")
            if m["metadata"]["labels"]["app.kubernetes.io/component"] == "rabbitmq"
        ]
        assert monitors, "no profile renders the broker's ServiceMonitor"
        for monitor in monitors:
            # Per queue (DLQ depth), and not the aggregated /metrics besides.
            assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
                ("prometheus", "/metrics/per-object")
            ]
