"""Scraping the relay (port 9809) and RabbitMQ's per-object metrics: the container
port, the headless Service, the ServiceMonitors, and the NetworkPolicy path."""

from __future__ import annotations

from chart_helpers import Manifest, Rendered, selector_matches
from test_chart_networkpolicy import INGRESS_CONTROLLER, MONITORING_NS, Endpoint, allowed

RELAY_METRICS = "taskhub-relay-metrics"
PROMETHEUS = Endpoint({"app.kubernetes.io/name": "prometheus"}, MONITORING_NS)


def relay(rendered: Rendered) -> Manifest | None:
    return rendered.get("Deployment", "taskhub-relay")


class TestRelayMetrics:
    def test_the_relay_serves_metrics_on_9809(self, rendered: Rendered) -> None:
        deployment = relay(rendered)
        assert (deployment is not None) == rendered.values["relay"]["enabled"]
        if deployment is None:
            return
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9809, "protocol": "TCP"} in container["ports"]

    def test_a_headless_service_selects_the_relay_pods(self, rendered: Rendered) -> None:
        deployment = relay(rendered)
        service = rendered.get("Service", RELAY_METRICS)
        assert (service is None) == (deployment is None)
        if deployment is None or service is None:
            return
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pods)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 9809, "targetPort": "metrics", "protocol": "TCP"}
        ]

    def test_a_service_monitor_scrapes_it(self, rendered: Rendered) -> None:
        monitor = rendered.get("ServiceMonitor", RELAY_METRICS)
        enabled = rendered.values["metrics"]["serviceMonitor"]["enabled"]
        assert (monitor is not None) == (enabled and relay(rendered) is not None)
        if monitor is None:
            return
        service = rendered.get("Service", RELAY_METRICS)
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

    def test_only_monitoring_reaches_the_metrics_port(self, rendered: Rendered) -> None:
        if relay(rendered) is None or not rendered.values["networkPolicy"]["enabled"]:
            return
        pod = Endpoint(relay(rendered)["spec"]["template"]["metadata"]["labels"])  # type: ignore[index]
        assert allowed(rendered, PROMETHEUS, pod, 9809)
        assert not allowed(rendered, PROMETHEUS, pod, 9808)
        assert not allowed(rendered, INGRESS_CONTROLLER, pod, 9809)

    def test_some_profile_renders_the_whole_path(self, all_rendered: list[Rendered]) -> None:
        # So the conditional checks above ran in full at least once.
        assert any(
            r.get("ServiceMonitor", RELAY_METRICS) is not None
            and r.values["networkPolicy"]["enabled"]
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
