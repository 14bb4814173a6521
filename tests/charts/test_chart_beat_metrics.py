"""Scraping Celery beat (port 9810): the container port and probes, the headless
Service, the ServiceMonitor, and the NetworkPolicy path."""

from __future__ import annotations

from chart_helpers import Manifest, Rendered, selector_matches
from test_chart_networkpolicy import INGRESS_CONTROLLER, MONITORING_NS, Endpoint, allowed

BEAT_METRICS = "taskhub-beat-metrics"
PROMETHEUS = Endpoint({"app.kubernetes.io/name": "prometheus"}, MONITORING_NS)


def beat(rendered: Rendered) -> Manifest | None:
    return rendered.get("Deployment", "taskhub-beat")


class TestBeatMetrics:
    def test_beat_serves_metrics_on_9810(self, rendered: Rendered) -> None:
        deployment = beat(rendered)
        assert (deployment is not None) == rendered.values["beat"]["enabled"]
        if deployment is None:
            return
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9810, "protocol": "TCP"} in container["ports"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}

    def test_a_headless_service_selects_the_beat_pod(self, rendered: Rendered) -> None:
        deployment = beat(rendered)
        service = rendered.get("Service", BEAT_METRICS)
        assert (service is None) == (deployment is None)
        if deployment is None or service is None:
            return
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pods)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 9810, "targetPort": "metrics", "protocol": "TCP"}
        ]

    def test_a_service_monitor_scrapes_it(self, rendered: Rendered) -> None:
        monitor = rendered.get("ServiceMonitor", BEAT_METRICS)
        enabled = rendered.values["metrics"]["serviceMonitor"]["enabled"]
        assert (monitor is not None) == (enabled and beat(rendered) is not None)
        if monitor is None:
            return
        service = rendered.get("Service", BEAT_METRICS)
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
        if beat(rendered) is None or not rendered.values["networkPolicy"]["enabled"]:
            return
        pod = Endpoint(beat(rendered)["spec"]["template"]["metadata"]["labels"])  # type: ignore[index]
        assert allowed(rendered, PROMETHEUS, pod, 9810)
        assert not allowed(rendered, PROMETHEUS, pod, 9809)
        assert not allowed(rendered, INGRESS_CONTROLLER, pod, 9810)

    def test_some_profile_renders_the_whole_path(self, all_rendered: list[Rendered]) -> None:
        # So the conditional checks above ran in full at least once.
        assert any(
            r.get("ServiceMonitor", BEAT_METRICS) is not None
            and r.values["networkPolicy"]["enabled"]
            for r in all_rendered
        )
