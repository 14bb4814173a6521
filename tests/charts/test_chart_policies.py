"""Policies over the rendered manifests of every profile."""

from __future__ import annotations

import re
from collections import Counter

from chart_helpers import (
    PROFILES,
    Manifest,
    Rendered,
    load_values,
    merged,
    parse,
    render,
    selector_matches,
)

APP_COMPONENTS = {"api", "worker", "relay", "beat", "migrate", "operator", "test"}
TMP = "/tmp"  # noqa: S108 - the emptyDir mount point, not a temp file


def containers(pod_template: Manifest) -> list[Manifest]:
    spec = pod_template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_env(workload: Manifest) -> dict[str, Manifest]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def component(obj: Manifest) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


class TestSelectorMatcher:
    def test_semantics(self) -> None:
        labels = {"a": "1", "b": "2"}
        assert selector_matches({}, labels)
        assert selector_matches({"matchLabels": {"a": "1"}}, labels)
        assert not selector_matches({"matchLabels": {"a": "2"}}, labels)
        in_expr = {"key": "b", "operator": "In", "values": ["2", "3"]}
        assert selector_matches({"matchExpressions": [in_expr]}, labels)
        absent = {"key": "c", "operator": "Exists"}
        assert not selector_matches({"matchExpressions": [absent]}, labels)


class TestObjects:
    def test_no_duplicate_kind_and_name(self, rendered: Rendered) -> None:
        keys = Counter((o["kind"], o["metadata"]["name"]) for o in rendered.objects)
        assert [k for k, n in keys.items() if n > 1] == []

    def test_names_are_dns_labels(self, rendered: Rendered) -> None:
        for obj in rendered.objects:
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", obj["metadata"]["name"])

    def test_no_secret_objects_and_no_literal_credentials(self, rendered: Rendered) -> None:
        assert rendered.of_kind("Secret") == []
        for _, pod in rendered.pod_templates():
            for container in containers(pod):
                for env in container.get("env", []):
                    if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", env["name"]):
                        assert "valueFrom" in env, env["name"]
                    value = env.get("value", "")
                    # Credentials inside URLs come from $(VAR) expansion only.
                    for userinfo in re.findall(r"://([^/@]*)@", value):
                        assert re.fullmatch(r"(\$\([A-Z_]+\))?:?\$\([A-Z_]+\)", userinfo), value


class TestWorkloads:
    def test_selectors_match_pod_labels_without_versions(self, rendered: Rendered) -> None:
        for workload, pod in rendered.pod_templates():
            if workload["kind"] in ("Pod", "TaskHub"):
                continue
            selector = workload["spec"].get("selector")
            if workload["kind"] == "Job":
                assert selector is None
                continue
            assert selector_matches(selector, pod["metadata"]["labels"])
            for key in selector["matchLabels"]:
                assert key not in ("helm.sh/chart", "app.kubernetes.io/version"), workload

    def test_resources_requests_and_limits(self, rendered: Rendered) -> None:
        for workload, pod in rendered.pod_templates():
            for container in containers(pod):
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                        workload["metadata"]["name"],
                        container["name"],
                    )

    def test_security_context(self, rendered: Rendered) -> None:
        for workload, pod in rendered.pod_templates():
            spec = pod["spec"]
            pod_sc = spec.get("securityContext", {})
            name = workload["metadata"]["name"]
            assert pod_sc.get("runAsNonRoot") is True, name
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            # Only the operator calls the Kubernetes API (and its uninstall hook).
            automount = (component(workload), workload["kind"]) in (
                ("operator", "Deployment"),
                ("operator-uninstall", "Job"),
            )
            assert spec.get("automountServiceAccountToken") is automount, name
            assert spec.get("hostNetwork") is not True, name
            for container in containers(pod):
                sc = container.get("securityContext", {})
                where = (name, container["name"])
                assert sc.get("runAsNonRoot") is True, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                assert not sc.get("capabilities", {}).get("add"), where
                assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
                assert sc.get("privileged") is not True, where

    def test_writable_tmp_for_read_only_root(self, rendered: Rendered) -> None:
        for workload, pod in rendered.pod_templates():
            volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
            for container in containers(pod):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert TMP in mounts, (workload["metadata"]["name"], container["name"])
                assert "emptyDir" in volumes[mounts[TMP]]

    def test_images_are_pinned(self, rendered: Rendered) -> None:
        images = []
        for workload, pod in rendered.pod_templates():
            for container in containers(pod):
                where = (workload["kind"], workload["metadata"]["name"], container["name"])
                if workload["kind"] == "TaskHub":
                    # The migration template: the operator sets its Jobs' image.
                    assert "image" not in container, where
                else:
                    # The API server requires one on every container of a pod
                    # template (validateContainerCommon: "Required value").
                    assert container.get("image"), where
                    images.append(container["image"])
        taskhub = rendered.taskhub()
        if taskhub is not None:
            images.append(taskhub["spec"]["image"])
        for image in images:
            ref = image.split("@")[0]
            assert ":" in ref.rsplit("/", 1)[-1], image
            assert not ref.endswith(":latest"), image
            assert not ref.endswith(":"), image

    def test_only_operator_mode_manages_deployments(self, rendered: Rendered) -> None:
        managed = rendered.managed_deployments()
        assert bool(managed) is rendered.operator_mode
        for name in managed:
            assert rendered.get("Deployment", name) is not None, name

    def test_app_image_defaults_to_app_version(self, all_rendered: list[Rendered]) -> None:
        defaults = next(r for r in all_rendered if r.profile == "defaults")
        app_version = defaults.values["image"]["tag"] or "0.1.0"
        taskhub = defaults.taskhub()
        operator = defaults.get("Deployment", "taskhub-operator")
        assert taskhub is not None and operator is not None
        assert taskhub["spec"]["image"] == f"ghcr.io/taskhub/taskhub:{app_version}"
        assert (
            operator["spec"]["template"]["spec"]["containers"][0]["image"]
            == (taskhub["spec"]["image"])
        )
        assert operator["metadata"]["labels"]["app.kubernetes.io/version"] == app_version
        off = next(r for r in all_rendered if r.profile == "operator-off")
        api = off.get("Deployment", "taskhub-api")
        assert api is not None
        assert api["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{app_version}")

    def test_one_image_for_every_process(self, rendered: Rendered) -> None:
        images = {
            c["image"]
            for w, pod in rendered.pod_templates()
            if component(w) in APP_COMPONENTS
            for c in containers(pod)
            if "image" in c
        }
        taskhub = rendered.taskhub()
        if taskhub is not None:
            images.add(taskhub["spec"]["image"])
        assert len(images) == 1
        subcommands = {
            c["args"][0]
            for w, pod in rendered.pod_templates()
            if component(w) in APP_COMPONENTS
            for c in containers(pod)
            if c.get("args")
        }
        assert {"api", "worker"} <= subcommands
        # With the operator, `migrate --phase ...` is set by the operator on
        # the container named migrate.
        assert ("operator" in subcommands) is rendered.operator_mode
        assert ("migrate" in subcommands) is not rendered.operator_mode

    def test_containers_with_ports_have_probes(self, rendered: Rendered) -> None:
        for workload, pod in rendered.pod_templates():
            for container in pod["spec"]["containers"]:
                if container.get("ports"):
                    where = (workload["metadata"]["name"], container["name"])
                    assert "livenessProbe" in container, where
                    assert "readinessProbe" in container, where


class TestApi:
    def api(self, rendered: Rendered) -> Manifest:
        api = rendered.get("Deployment", "taskhub-api")
        assert api is not None
        return api

    def test_probes_on_health_endpoints(self, rendered: Rendered) -> None:
        container = self.api(rendered)["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
        expected = {
            "startupProbe": "/health/live",
            "livenessProbe": "/health/live",
            "readinessProbe": "/health/ready",
        }
        for probe, path in expected.items():
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe

    def test_rolling_update_never_drops_capacity(self, rendered: Rendered) -> None:
        strategy = self.api(rendered)["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    def test_replicas_and_autoscaling(self, rendered: Rendered) -> None:
        api = self.api(rendered)
        hpas = rendered.of_kind("HorizontalPodAutoscaler")
        if rendered.values["api"]["autoscaling"]["enabled"]:
            # The HPA owns the replica count; the chart must not reset it.
            assert "replicas" not in api["spec"]
            (hpa,) = hpas
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["minReplicas"] >= 2
            metrics = {
                m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]
            }
            assert metrics["cpu"]["type"] == metrics["memory"]["type"] == "Utilization"
        else:
            assert hpas == []
            assert api["spec"]["replicas"] == rendered.values["api"]["replicas"]

    def test_default_autoscaling(self, all_rendered: list[Rendered]) -> None:
        defaults = next(r for r in all_rendered if r.profile == "defaults")
        (hpa,) = defaults.of_kind("HorizontalPodAutoscaler")
        spec = hpa["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
        targets = {m["resource"]["name"]: m["resource"]["target"] for m in spec["metrics"]}
        assert targets["cpu"]["averageUtilization"] == 70
        assert targets["memory"]["averageUtilization"] == 80
        assert defaults.values["api"]["replicas"] >= 2

    def test_hpa_targets_exist(self, rendered: Rendered) -> None:
        for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            assert rendered.get(ref["kind"], ref["name"]) is not None, ref

    def test_pdb_selects_api_pods(self, rendered: Rendered) -> None:
        pdbs = rendered.of_kind("PodDisruptionBudget")
        if not rendered.values["api"]["pdb"]["enabled"]:
            assert pdbs == []
            return
        (pdb,) = pdbs
        labels = self.api(rendered)["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(pdb["spec"]["selector"], labels)

    def test_topology_spread_across_nodes(self, rendered: Rendered) -> None:
        spec = self.api(rendered)["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in spec.get("topologySpreadConstraints", [])}
        assert "kubernetes.io/hostname" in keys

    def test_ingress(self, rendered: Rendered) -> None:
        ingresses = rendered.of_kind("Ingress")
        if not rendered.values["ingress"]["enabled"]:
            assert ingresses == []
            return
        (ingress,) = ingresses
        assert ingress["spec"]["ingressClassName"] == "nginx"
        annotations = ingress["metadata"]["annotations"]
        for key in ("proxy-body-size", "proxy-read-timeout", "proxy-send-timeout"):
            assert f"nginx.ingress.kubernetes.io/{key}" in annotations
        if rendered.values["ingress"]["tls"]["enabled"]:
            assert ingress["spec"]["tls"][0]["secretName"]
        if rendered.values["ingress"]["certManager"]["enabled"]:
            assert "cert-manager.io/cluster-issuer" in annotations


class TestServicesAndRouting:
    def pods(self, rendered: Rendered) -> list[Manifest]:
        return [pod for _, pod in rendered.pod_templates()]

    def test_services_select_pods_and_ports_exist(self, rendered: Rendered) -> None:
        for svc in rendered.of_kind("Service"):
            matched = [
                p
                for p in self.pods(rendered)
                if selector_matches(
                    {"matchLabels": svc["spec"]["selector"]}, p["metadata"]["labels"]
                )
            ]
            assert matched, svc["metadata"]["name"]
            for port in svc["spec"]["ports"]:
                target = port["targetPort"]
                for pod in matched:
                    names = {
                        p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])
                    }
                    numbers = {
                        p["containerPort"]
                        for c in pod["spec"]["containers"]
                        for p in c.get("ports", [])
                    }
                    assert target in names | numbers, (svc["metadata"]["name"], target)

    def test_ingress_backends_exist(self, rendered: Rendered) -> None:
        for ingress in rendered.of_kind("Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    svc = rendered.get("Service", backend["name"])
                    assert svc is not None, backend
                    port_names = {p["name"] for p in svc["spec"]["ports"]}
                    assert backend["port"].get("name") in port_names, backend

    def test_service_monitors_select_services(self, rendered: Rendered) -> None:
        services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
        for sm in rendered.of_kind("ServiceMonitor"):
            selector = sm["spec"]["selector"]
            own = [
                s for s in services.values() if selector_matches(selector, s["metadata"]["labels"])
            ]
            if sm["metadata"]["labels"]["app.kubernetes.io/component"] in ("api", "worker"):
                assert len(own) == 1, sm["metadata"]["name"]
                ports = {p["name"] for p in own[0]["spec"]["ports"]}
                assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports

    def test_monitoring_toggles(self, rendered: Rendered) -> None:
        metrics = rendered.values["metrics"]
        monitors = {component(m) for m in rendered.of_kind("ServiceMonitor")}
        if metrics["serviceMonitor"]["enabled"]:
            assert {"api", "worker"} <= monitors
        else:
            assert rendered.of_kind("ServiceMonitor", "PodMonitor") == []
        rules = rendered.of_kind("PrometheusRule")
        assert len(rules) == (1 if metrics["prometheusRule"]["enabled"] else 0)

    def test_alerts_use_the_metric_contract(self, rendered: Rendered) -> None:
        """What the rules say is tested with promtool in tests/monitoring; here: the
        alerts that must exist do, and none names a metric nothing exports."""
        for rule in rendered.of_kind("PrometheusRule"):
            rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
            alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
            assert {
                "TaskHubApiAvailabilityBudgetBurnFast",
                "TaskHubDeadLetterQueueNotEmpty",
                "TaskHubTargetDown",
            } <= set(alerts)
            assert "up{" in alerts["TaskHubTargetDown"]
            assert not [r for r in rules if "taskhub_dlq_messages" in r["expr"]]


class TestProcesses:
    def test_one_worker_deployment_per_group(self, rendered: Rendered) -> None:
        groups = rendered.values["workers"]["groups"]
        workers = {
            d["metadata"]["labels"]["taskhub.io/worker-group"]: d
            for d in rendered.of_kind("Deployment")
            if component(d) == "worker"
        }
        assert set(workers) == set(groups)
        for name, deployment in workers.items():
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["args"] == ["worker", "--queues", ",".join(groups[name]["queues"])]
            scaling = groups[name].get("autoscaling", {})
            if rendered.operator_mode and scaling and scaling.get("enabled", True):
                # The operator owns the count (deployments/scale).
                assert "replicas" not in deployment["spec"], name
            else:
                assert deployment["spec"]["replicas"] == groups[name]["replicas"]
            assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in container[
                "ports"
            ]

    def test_beat_is_a_singleton(self, rendered: Rendered) -> None:
        beat = rendered.get("Deployment", "taskhub-beat")
        assert beat is not None
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"] == {"type": "Recreate"}

    def test_relay(self, rendered: Rendered) -> None:
        relay = rendered.get("Deployment", "taskhub-relay")
        assert relay is not None
        assert relay["spec"]["template"]["spec"]["containers"][0]["args"] == ["relay"]

    def test_only_the_relay_listens_on_the_primary(self, rendered: Rendered) -> None:
        # PgBouncer in transaction mode never delivers a NOTIFY: the relay's LISTEN
        # goes to the -rw Service, like the migrations; every other process uses the
        # poolers only.
        for deployment in rendered.of_kind("Deployment"):
            if component(deployment) not in {"api", "worker", "beat", "relay"}:
                continue
            env = container_env(deployment)
            if component(deployment) != "relay":
                assert "TASKHUB_DB__LISTEN_URL" not in env, deployment["metadata"]["name"]
                continue
            listen = env.get("TASKHUB_DB__LISTEN_URL")
            v = rendered.values
            if v["postgresql"]["enabled"]:
                assert listen is not None
                assert listen["value"] == (
                    "postgresql+asyncpg://$(DB_USERNAME):$(DB_PASSWORD)"
                    "@taskhub-pg-rw.taskhub.svc:5432/taskhub"
                ), listen
                names = list(env)
                assert names.index("DB_PASSWORD") < names.index("TASKHUB_DB__LISTEN_URL")
            elif v["externalDatabase"]["listenUrlKey"]:
                assert listen == {
                    "name": "TASKHUB_DB__LISTEN_URL",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": v["externalDatabase"]["existingSecret"],
                            "key": v["externalDatabase"]["listenUrlKey"],
                        }
                    },
                }
            else:
                assert listen is None  # the relay listens on TASKHUB_DB__URL

    def test_external_database_without_a_listen_url_key(self) -> None:
        values = merged(
            load_values(PROFILES["external-services"]),
            {"externalDatabase": {"listenUrlKey": ""}},
        )
        objects, _ = parse(render(values))
        (relay,) = [o for o in objects if o["kind"] == "Deployment" and component(o) == "relay"]
        assert "TASKHUB_DB__LISTEN_URL" not in container_env(relay)
        assert "TASKHUB_DB__URL" in container_env(relay)

    def test_migration_job(self, rendered: Rendered) -> None:
        jobs = [j for j in rendered.of_kind("Job") if component(j) == "migrate"]
        taskhub = rendered.taskhub()
        if rendered.operator_mode:
            # The operator creates the Jobs from the TaskHub's template.
            assert jobs == []
            assert taskhub is not None
            pod = taskhub["spec"]["migrations"]["template"]["spec"]
            assert "restartPolicy" not in pod
            first = (pod.get("initContainers") or pod["containers"])[0]
            assert first["name"] == "migrate"
            assert "args" not in first
            assert "image" not in first
        else:
            assert taskhub is None
            (job,) = jobs
            pod = job["spec"]["template"]["spec"]
            assert pod["restartPolicy"] == "Never"
            first = (pod.get("initContainers") or pod["containers"])[0]
            assert first["args"] == ["migrate"]
        env = {e["name"]: e for e in first["env"]}
        if rendered.values["postgresql"]["enabled"]:
            # Straight to the primary: migrations take session-level locks.
            assert "-pg-rw." in env["TASKHUB_DB__URL"]["value"]

    def test_app_env_contract(self, rendered: Rendered) -> None:
        api = rendered.get("Deployment", "taskhub-api")
        assert api is not None
        env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
        for name in (
            "TASKHUB_DB__URL",
            "TASKHUB_DB__REPLICA_URL",
            "TASKHUB_REDIS__URL",
            "TASKHUB_BROKER__URL",
            "TASKHUB_AUTH__SECRET_KEY",
            "TASKHUB_LOG_LEVEL",
        ):
            assert name in env, name
        names = list(env)
        for name, var in env.items():
            # $(VAR) only expands variables defined earlier in the list.
            for ref in re.findall(r"\$\(([A-Z_]+)\)", var.get("value", "")):
                assert names.index(ref) < names.index(name), (name, ref)
        if rendered.values["postgresql"]["enabled"]:
            assert "-pooler-rw." in env["TASKHUB_DB__URL"]["value"]
            assert "-pooler-ro." in env["TASKHUB_DB__REPLICA_URL"]["value"]
        if rendered.values["keycloak"]["enabled"] or rendered.values["auth"]["oidc"]["issuer"]:
            assert env["TASKHUB_AUTH__OIDC_ISSUER"]["value"].endswith("/realms/taskhub")
