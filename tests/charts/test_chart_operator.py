"""Operator mode (operator.enabled): the operator, its RBAC, what the chart
leaves to it (migration Jobs, images, worker replicas) and the `helm test`
Pod. Operator off keeps the chart as it was. An upgrade's diff against a
cluster: test_chart_upgrade.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import helm_python as helm
import pytest
from chart_helpers import Manifest, Rendered, parse, render, rendered_profile
from test_chart_policies import component, containers

# The Role, exactly: every request the operator makes and nothing more.
OPERATOR_RULES = [
    ("taskhub.io", "taskhubs", ("list", "watch", "patch")),
    ("taskhub.io", "taskhubs/status", ("patch",)),
    ("batch", "jobs", ("create", "get")),
    ("apps", "deployments", ("get", "patch")),
    ("apps", "deployments/scale", ("patch",)),
    ("", "secrets", ("get",)),
    ("", "events", ("create",)),
]


def objects_of(values: dict[str, Any], **kwargs: Any) -> dict[tuple[str, str], Manifest]:
    objects, _ = parse(render(values, **kwargs))
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def operator_deployment(rendered: Rendered) -> Manifest:
    deployment = rendered.get("Deployment", "taskhub-operator")
    assert deployment is not None
    return deployment


def operator_objects(rendered: Rendered, kind: str) -> list[Manifest]:
    """The operator's own objects of a kind (not the uninstall hook's)."""
    return [
        o
        for o in rendered.of_kind(kind)
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]


def autoscaled_groups(rendered: Rendered) -> dict[str, dict[str, Any]]:
    groups = rendered.values["workers"]["groups"]
    return {
        name: cfg["autoscaling"]
        for name, cfg in groups.items()
        if rendered.operator_mode
        and cfg.get("autoscaling")
        and cfg["autoscaling"].get("enabled", True)
    }


class TestModes:
    def test_migration_job_only_with_the_operator_off(self, rendered: Rendered) -> None:
        jobs = [j for j in rendered.of_kind("Job") if component(j) == "migrate"]
        expected = 0 if rendered.operator_mode else int(rendered.values["migrations"]["enabled"])
        assert len(jobs) == expected

    def test_operator_objects_only_in_operator_mode(self, rendered: Rendered) -> None:
        operator_kinds = {
            (o["kind"], o["metadata"]["name"])
            for o in rendered.objects
            if component(o) == "operator"
        }
        if not rendered.operator_mode:
            assert operator_kinds == set()
            return
        assert operator_kinds >= {
            ("TaskHub", "taskhub"),
            ("Deployment", "taskhub-operator"),
            ("ServiceAccount", "taskhub-operator"),
            ("Role", "taskhub-operator"),
            ("RoleBinding", "taskhub-operator"),
            ("Service", "taskhub-operator"),
        }

    def test_operator_off_is_the_chart_as_before(self, all_rendered: list[Rendered]) -> None:
        off = next(r for r in all_rendered if r.profile == "operator-off")
        assert off.taskhub() is None
        assert off.of_kind("Role", "RoleBinding") == []
        (job,) = off.of_kind("Job")
        assert job["metadata"]["name"] == "taskhub-migrate-1"
        for deployment in off.of_kind("Deployment"):
            spec = deployment["spec"]
            assert "replicas" in spec or deployment["metadata"]["name"] == "taskhub-api"
            for container in containers(spec["template"]):
                assert container["image"] == "ghcr.io/taskhub/taskhub:0.1.0" or (
                    component(deployment) == "redis"
                )


class TestManagedDeployments:
    def test_every_managed_deployment_has_the_release_image_offline(
        self, rendered: Rendered
    ) -> None:
        managed = rendered.managed_deployments()
        app = {
            d["metadata"]["name"]
            for d in rendered.of_kind("Deployment")
            if component(d) in ("api", "relay", "beat", "worker")
        }
        if not rendered.operator_mode:
            assert managed == set()
            return
        # Every app Deployment is rolled by the operator. With no cluster to
        # look the live Deployment up in (a first install, `helm template`),
        # each starts on the release's image.
        assert managed == app
        taskhub = rendered.taskhub()
        assert taskhub is not None
        for name in managed:
            deployment = rendered.get("Deployment", name)
            assert deployment is not None
            for container in containers(deployment["spec"]["template"]):
                assert container["image"] == taskhub["spec"]["image"], (name, container["name"])
                assert container["imagePullPolicy"] == rendered.values["image"]["pullPolicy"]

    def test_autoscaled_workers_leave_replicas_to_the_operator(self, rendered: Rendered) -> None:
        scaled = autoscaled_groups(rendered)
        taskhub = rendered.taskhub()
        entries = {w["deployment"]: w for w in (taskhub or {}).get("spec", {}).get("workers", [])}
        assert set(entries) == {f"taskhub-worker-{g}" for g in scaled}
        for group, cfg in rendered.values["workers"]["groups"].items():
            deployment = rendered.get("Deployment", f"taskhub-worker-{group}")
            assert deployment is not None
            if group in scaled:
                assert "replicas" not in deployment["spec"], group
                entry = entries[f"taskhub-worker-{group}"]
                assert entry["queues"] == cfg["queues"]
                settings = {k: v for k, v in cfg["autoscaling"].items() if k != "enabled"}
                assert {k: entry[k] for k in settings} == settings
            else:
                assert deployment["spec"]["replicas"] == cfg["replicas"], group

    def test_a_group_can_opt_out(self) -> None:
        objects = objects_of(
            {"workers": {"groups": {"webhooks": {"autoscaling": {"enabled": False}}}}}
        )
        spec = objects[("TaskHub", "taskhub")]["spec"]
        assert "taskhub-worker-webhooks" not in {w["deployment"] for w in spec["workers"]}
        assert {"name": "taskhub-worker-webhooks"} in spec["deployments"]
        assert objects[("Deployment", "taskhub-worker-webhooks")]["spec"]["replicas"] == 2

    def test_a_custom_group_disabled_needs_no_bounds(self) -> None:
        bulk = {
            "queues": ["bulk"],
            "replicas": 3,
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "100m", "memory": "128Mi"},
            },
            "egress": {"smtp": False, "webhooks": False},
            "autoscaling": {"enabled": False},
        }
        objects = objects_of({"workers": {"groups": {"bulk": bulk}}})
        assert objects[("Deployment", "taskhub-worker-bulk")]["spec"]["replicas"] == 3
        spec = objects[("TaskHub", "taskhub")]["spec"]
        assert {"name": "taskhub-worker-bulk"} in spec["deployments"]

    def test_no_autoscaling_without_the_operator(self) -> None:
        objects = objects_of({"operator": {"enabled": False}})
        for group, replicas in (("notifications", 2), ("webhooks", 2), ("maintenance", 1)):
            assert (
                objects[("Deployment", f"taskhub-worker-{group}")]["spec"]["replicas"] == replicas
            )


class TestOperatorDeployment:
    def test_command_and_singleton(self, rendered: Rendered) -> None:
        if not rendered.operator_mode:
            return
        deployment = operator_deployment(rendered)
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        pod = spec["template"]["spec"]
        assert pod["serviceAccountName"] == "taskhub-operator"
        assert pod["automountServiceAccountToken"] is True
        (container,) = pod["containers"]
        assert container["args"] == [
            "operator",
            "--namespace",
            "taskhub",
            "--liveness-port",
            "8081",
        ]
        taskhub = rendered.taskhub()
        assert taskhub is not None
        assert container["image"] == taskhub["spec"]["image"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {
            "TASKHUB_OPERATOR_INTERVAL": str(rendered.values["operator"]["interval"]),
            "TASKHUB_OPERATOR_METRICS_PORT": "8080",
        }
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": 8080, "health": 8081}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}

    def test_interval_from_values(self) -> None:
        objects = objects_of({"operator": {"interval": 30}})
        (container,) = objects[("Deployment", "taskhub-operator")]["spec"]["template"]["spec"][
            "containers"
        ]
        assert {"name": "TASKHUB_OPERATOR_INTERVAL", "value": "30"} in container["env"]

    def test_only_the_operator_mounts_a_token(self, rendered: Rendered) -> None:
        accounts = {
            sa["metadata"]["name"]: sa["automountServiceAccountToken"]
            for sa in rendered.of_kind("ServiceAccount")
        }
        expected = {"taskhub": False}
        if rendered.operator_mode:
            expected["taskhub-operator"] = True
            expected["taskhub-operator-uninstall"] = True  # the pre-delete hook
        assert accounts == expected

    def test_metrics_service_and_monitor(self, rendered: Rendered) -> None:
        service = rendered.get("Service", "taskhub-operator")
        monitor = rendered.get("ServiceMonitor", "taskhub-operator")
        if not rendered.operator_mode:
            assert service is None and monitor is None
            return
        assert service is not None
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
        ]
        if not rendered.values["metrics"]["serviceMonitor"]["enabled"]:
            assert monitor is None
            return
        assert monitor is not None
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


class TestRole:
    def test_exact_rules(self, rendered: Rendered) -> None:
        if not rendered.operator_mode:
            return
        (role,) = operator_objects(rendered, "Role")
        rules = sorted(
            (group, resource, tuple(sorted(rule["verbs"])))
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        )
        assert rules == sorted((g, r, tuple(sorted(v))) for g, r, v in OPERATOR_RULES)
        assert all(
            set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
            for rule in role["rules"]
        )

    def test_only_the_credentials_secret(self, rendered: Rendered) -> None:
        if not rendered.operator_mode:
            return
        (role,) = operator_objects(rendered, "Role")
        taskhub = rendered.taskhub()
        assert taskhub is not None
        secret = taskhub["spec"]["rabbitmq"]["credentialsSecret"]
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:
                assert rule["resourceNames"] == [secret]
            else:
                assert "resourceNames" not in rule
        if rendered.values["rabbitmq"]["enabled"]:
            assert secret == "taskhub-rabbitmq-default-user"
        else:
            assert secret == rendered.values["operator"]["rabbitmq"]["credentialsSecret"]

    def test_binding(self, rendered: Rendered) -> None:
        if not rendered.operator_mode:
            return
        (binding,) = operator_objects(rendered, "RoleBinding")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "taskhub-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "taskhub-operator", "namespace": "taskhub"}
        ]
        assert rendered.of_kind("ClusterRole", "ClusterRoleBinding") == []


class TestRabbitMq:
    def test_management_api_for_the_operator(self, rendered: Rendered) -> None:
        taskhub = rendered.taskhub()
        if taskhub is None:
            return
        rabbitmq = taskhub["spec"]["rabbitmq"]
        if rendered.values["rabbitmq"]["enabled"]:
            # The RabbitMQ cluster operator names the client Service after the
            # RabbitmqCluster and gives it the management port 15672.
            assert rabbitmq == {
                "managementUrl": "http://taskhub-rabbitmq.taskhub.svc:15672",
                "credentialsSecret": "taskhub-rabbitmq-default-user",
            }
        else:
            assert rabbitmq == rendered.values["operator"]["rabbitmq"]

    def test_external_broker_needs_the_management_api(self) -> None:
        values = {"rabbitmq": {"enabled": False}, "externalBroker": {"existingSecret": "broker"}}
        with pytest.raises(helm.HelmRenderError) as excinfo:
            render(values)
        assert "set operator.rabbitmq.managementUrl and operator.rabbitmq.credentialsSecret" in str(
            excinfo.value
        )
        half = {**values, "operator": {"rabbitmq": {"managementUrl": "http://mq:15672"}}}
        with pytest.raises(helm.HelmRenderError, match="set both managementUrl and credentials"):
            render(half)
        # Without autoscaled groups nothing reads the management API.
        no_scaling = {
            **values,
            "workers": {
                "groups": {
                    g: {"autoscaling": {"enabled": False}}
                    for g in ("notifications", "webhooks", "maintenance")
                }
            },
        }
        objects = objects_of(no_scaling)
        spec = objects[("TaskHub", "taskhub")]["spec"]
        assert "workers" not in spec and "rabbitmq" not in spec
        role = objects[("Role", "taskhub-operator")]
        assert all("secrets" not in rule["resources"] for rule in role["rules"])


class TestTemplateGuards:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (
                {
                    "workers": {
                        "groups": {
                            "webhooks": {"autoscaling": {"minReplicas": 9, "maxReplicas": 4}}
                        }
                    }
                },
                "workers.groups.webhooks.autoscaling.minReplicas must not exceed maxReplicas",
            ),
            ({"migrations": {"backoffLimit": 25}}, "migrations.backoffLimit must be at most 20"),
            (
                {"migrations": {"activeDeadlineSeconds": 90000}},
                "migrations.activeDeadlineSeconds must be at most 86400",
            ),
        ],
    )
    def test_refused_at_render_time(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmRenderError) as excinfo:
            render(values)
        assert message in str(excinfo.value)

    def test_operator_off_keeps_its_limits(self) -> None:
        objects = objects_of({"operator": {"enabled": False}, "migrations": {"backoffLimit": 25}})
        assert objects[("Job", "taskhub-migrate-1")]["spec"]["backoffLimit"] == 25


class _Health(BaseHTTPRequestHandler):
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        code = (
            200 if self.path == "/health/ready" and type(self).status == 200 else type(self).status
        )
        self.send_response(code)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class TestHelmTestPod:
    def test_pod(self, rendered: Rendered) -> None:
        pod = rendered.get("Pod", "taskhub-test")
        assert pod is not None
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        (container,) = spec["containers"]
        assert container["command"][:2] == ["python", "-c"]
        service = rendered.get("Service", "taskhub-api")
        assert service is not None
        (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
        assert container["args"] == [f"http://taskhub-api.taskhub.svc:{port}/health/ready"]
        assert container["image"].startswith(rendered.values["image"]["repository"] + ":")

    def test_port_follows_the_service(self) -> None:
        objects = objects_of({"api": {"service": {"port": 8080}}})
        (container,) = objects[("Pod", "taskhub-test")]["spec"]["containers"]
        assert container["args"] == ["http://taskhub-api.taskhub.svc:8080/health/ready"]

    def test_can_be_disabled(self) -> None:
        objects = objects_of({"tests": {"enabled": False}})
        assert not [k for k in objects if k[0] == "Pod"]
        assert ("NetworkPolicy", "taskhub-test") not in objects

    @pytest.mark.parametrize(("status", "code"), [(200, 0), (204, 1), (503, 1), (404, 1)])
    def test_script_exit_code(self, health_server: HTTPServer, status: int, code: int) -> None:
        pod = rendered_profile("defaults").get("Pod", "taskhub-test")
        assert pod is not None
        (container,) = pod["spec"]["containers"]
        _Health.status = status
        url = f"http://127.0.0.1:{health_server.server_port}/health/ready"
        result = subprocess.run(
            [sys.executable, *container["command"][1:], url],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == code, result.stderr

    def test_script_fails_when_unreachable(self) -> None:
        pod = rendered_profile("defaults").get("Pod", "taskhub-test")
        assert pod is not None
        (container,) = pod["spec"]["containers"]
        server = HTTPServer(("127.0.0.1", 0), _Health)
        port = server.server_port
        server.server_close()  # nothing listens there any more
        result = subprocess.run(
            [sys.executable, *container["command"][1:], f"http://127.0.0.1:{port}/health/ready"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 1
        assert "Connection refused" in result.stderr
