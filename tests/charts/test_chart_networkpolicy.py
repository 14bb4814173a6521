"""NetworkPolicies: default deny, every pod covered, the intended paths open
and nothing more. Evaluated with Kubernetes' NetworkPolicy semantics over the
rendered policies."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from chart_helpers import (
    NAMESPACE,
    Manifest,
    Rendered,
    chart,
    operator_migration_job,
    parse,
    render,
    selector_matches,
)

THIS_NS = {"kubernetes.io/metadata.name": NAMESPACE}
INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx"}
KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}
CNPG_NS = {"kubernetes.io/metadata.name": "cnpg-system"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}


@dataclass(frozen=True)
class Endpoint:
    pod: dict[str, str] = field(default_factory=dict)
    namespace: dict[str, str] = field(default_factory=lambda: THIS_NS)
    ip: str | None = None


INGRESS_CONTROLLER = Endpoint({"app.kubernetes.io/name": "ingress-nginx"}, INGRESS_NS)
DNS = Endpoint({"k8s-app": "kube-dns"}, KUBE_SYSTEM)
CNPG_OPERATOR = Endpoint({"app.kubernetes.io/name": "cloudnative-pg"}, CNPG_NS)

# Labels the operators put on the pods they create.
PG = Endpoint({"cnpg.io/cluster": "taskhub-pg", "cnpg.io/podRole": "instance"})
POOLER_RW = Endpoint({"cnpg.io/poolerName": "taskhub-pg-pooler-rw", "cnpg.io/podRole": "pooler"})
POOLER_RO = Endpoint({"cnpg.io/poolerName": "taskhub-pg-pooler-ro", "cnpg.io/podRole": "pooler"})
RABBITMQ = Endpoint(
    {"app.kubernetes.io/name": "taskhub-rabbitmq", "app.kubernetes.io/component": "rabbitmq"}
)
KEYCLOAK = Endpoint(
    {
        "app": "keycloak",
        "app.kubernetes.io/instance": "taskhub-keycloak",
        "app.kubernetes.io/managed-by": "keycloak-operator",
    }
)
KEYCLOAK_IMPORT = Endpoint(
    {
        "app": "keycloak-realm-import",
        "app.kubernetes.io/instance": "taskhub-keycloak",
        "app.kubernetes.io/managed-by": "keycloak-operator",
    }
)
KEYCLOAK_DB = Endpoint({"cnpg.io/cluster": "taskhub-kc-pg", "cnpg.io/podRole": "instance"})
KEYCLOAK_OPERATOR = Endpoint({"app.kubernetes.io/name": "keycloak-operator"})


def peer_matches(peer: Manifest, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if endpoint.ip is None:
            return False
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if endpoint.ip is not None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selector_matches(peer["namespaceSelector"], endpoint.namespace)
    else:
        in_namespace = endpoint.namespace == THIS_NS
    return in_namespace and selector_matches(peer.get("podSelector", {}), endpoint.pod)


def port_matches(rule: Manifest, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def policies_for(rendered: Rendered, endpoint: Endpoint, direction: str) -> list[Manifest]:
    return [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if endpoint.namespace == THIS_NS
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], endpoint.pod)
    ]


def allowed(
    rendered: Rendered, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Both the source's egress and the destination's ingress must allow it."""
    egress_policies = policies_for(rendered, src, "Egress")
    egress_ok = (not egress_policies and src.namespace != THIS_NS) or any(
        port_matches(rule, port, protocol)
        and any(peer_matches(peer, dst) for peer in rule.get("to", []))
        for policy in egress_policies
        for rule in policy["spec"].get("egress", [])
    )
    if dst.ip is not None or dst.namespace != THIS_NS:
        return egress_ok
    ingress_policies = policies_for(rendered, dst, "Ingress")
    ingress_ok = not ingress_policies or any(
        port_matches(rule, port, protocol)
        and any(peer_matches(peer, src) for peer in rule.get("from", []))
        for policy in ingress_policies
        for rule in policy["spec"].get("ingress", [])
    )
    return egress_ok and ingress_ok


def app_pod(rendered: Rendered, name: str, kind: str = "Deployment") -> Endpoint:
    obj = rendered.get(kind, name)
    if obj is None and kind == "Deployment":
        obj = next(
            (j for j in rendered.of_kind("Job") if j["metadata"]["name"].startswith(name)), None
        )
    if obj is None and name.endswith("-migrate") and rendered.operator_mode:
        # The operator's Job, with the labels the operator gives it.
        obj = operator_migration_job(rendered)
    assert obj is not None, name
    if obj["kind"] == "Pod":
        return Endpoint(obj["metadata"]["labels"])
    return Endpoint(obj["spec"]["template"]["metadata"]["labels"])


def operator_pods(rendered: Rendered) -> list[Endpoint]:
    pods = []
    if rendered.values["postgresql"]["enabled"]:
        pods += [PG, POOLER_RW, POOLER_RO]
    if rendered.values["rabbitmq"]["enabled"]:
        pods.append(RABBITMQ)
    if rendered.values["keycloak"]["enabled"]:
        pods += [KEYCLOAK, KEYCLOAK_IMPORT, KEYCLOAK_DB, KEYCLOAK_OPERATOR]
    return pods


@pytest.fixture
def policies_on(rendered: Rendered) -> Rendered:
    if not rendered.values["networkPolicy"]["enabled"]:
        pytest.fail(f"profile {rendered.profile} disables NetworkPolicies")
    return rendered


class TestEvaluator:
    def test_ip_blocks_and_namespaces(self) -> None:
        block = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}
        assert peer_matches(block, Endpoint(ip="93.184.216.34"))
        assert not peer_matches(block, Endpoint(ip="10.1.2.3"))
        assert not peer_matches({"podSelector": {}}, INGRESS_CONTROLLER)
        assert peer_matches({"namespaceSelector": {}, "podSelector": {}}, INGRESS_CONTROLLER)


class TestCoverage:
    def test_default_deny(self, policies_on: Rendered) -> None:
        deny = [p for p in policies_on.of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
        assert len(deny) == 1
        assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny[0]["spec"]
        assert "egress" not in deny[0]["spec"]

    def test_every_pod_has_its_own_policy(self, policies_on: Rendered) -> None:
        pods = [Endpoint(pod["metadata"]["labels"]) for _, pod in policies_on.pod_templates()]
        for endpoint in pods + operator_pods(policies_on):
            specific = [
                p
                for p in policies_on.of_kind("NetworkPolicy")
                if p["spec"]["podSelector"] != {}
                and selector_matches(p["spec"]["podSelector"], endpoint.pod)
            ]
            assert specific, endpoint.pod

    def test_everything_that_resolves_names_reaches_dns(self, policies_on: Rendered) -> None:
        pods = [
            Endpoint(pod["metadata"]["labels"])
            for workload, pod in policies_on.pod_templates()
            if workload["metadata"]["labels"]["app.kubernetes.io/component"] != "redis"
        ]
        for endpoint in pods + operator_pods(policies_on):
            assert allowed(policies_on, endpoint, DNS, 53, "UDP"), endpoint.pod
            assert allowed(policies_on, endpoint, DNS, 53, "TCP"), endpoint.pod


class TestPaths:
    def test_ingress_controller_reaches_only_the_api(self, policies_on: Rendered) -> None:
        api = app_pod(policies_on, "taskhub-api")
        assert allowed(policies_on, INGRESS_CONTROLLER, api, 8000)
        assert not allowed(policies_on, INGRESS_CONTROLLER, api, 9999)
        for name in ("taskhub-relay", "taskhub-beat"):
            assert not allowed(policies_on, INGRESS_CONTROLLER, app_pod(policies_on, name), 8000)

    def test_backends_reach_their_services(self, policies_on: Rendered) -> None:
        v = policies_on.values
        api = app_pod(policies_on, "taskhub-api")
        relay = app_pod(policies_on, "taskhub-relay")
        workers = [
            Endpoint(d["spec"]["template"]["metadata"]["labels"])
            for d in policies_on.of_kind("Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
        ]
        for src in [api, relay, *workers]:
            if v["postgresql"]["enabled"]:
                assert allowed(policies_on, src, POOLER_RW, 5432)
                assert allowed(policies_on, src, POOLER_RO, 5432)
                # Only through PgBouncer, but for the relay's LISTEN (below).
                assert allowed(policies_on, src, PG, 5432) is (src is relay)
            else:
                ip = str(ipaddress.ip_network(v["externalDatabase"]["egressCidrs"][0])[1])
                assert allowed(policies_on, src, Endpoint(ip=ip), v["externalDatabase"]["port"])
            if v["rabbitmq"]["enabled"]:
                assert allowed(policies_on, src, RABBITMQ, 5672)
            if v["redis"]["enabled"]:
                redis = app_pod(policies_on, "taskhub-redis")
                assert allowed(policies_on, src, redis, 6379)
        if v["keycloak"]["enabled"]:
            assert allowed(policies_on, api, KEYCLOAK, 8080)
            for worker in workers:
                assert not allowed(policies_on, worker, KEYCLOAK, 8080)

    def test_relay_listens_on_the_primary(self, policies_on: Rendered) -> None:
        # PgBouncer in transaction mode never delivers a NOTIFY: the relay's
        # TASKHUB_DB__LISTEN_URL is the -rw Service, so both ends must allow it.
        if not policies_on.values["postgresql"]["enabled"]:
            return
        relay = app_pod(policies_on, "taskhub-relay")
        assert allowed(policies_on, relay, PG, 5432)
        assert not allowed(policies_on, relay, PG, 8000)
        beat = app_pod(policies_on, "taskhub-beat")
        assert not allowed(policies_on, beat, PG, 5432)

    def test_platform_internals(self, policies_on: Rendered) -> None:
        v = policies_on.values
        if v["postgresql"]["enabled"]:
            migrate = app_pod(policies_on, "taskhub-migrate")
            assert allowed(policies_on, migrate, PG, 5432)
            assert allowed(policies_on, POOLER_RW, PG, 5432)
            assert allowed(policies_on, PG, PG, 5432)
            assert allowed(policies_on, CNPG_OPERATOR, PG, 8000)
            assert allowed(policies_on, PG, Endpoint(ip="10.96.0.1"), 443)
        if v["keycloak"]["enabled"]:
            assert allowed(policies_on, KEYCLOAK, KEYCLOAK_DB, 5432)
            assert allowed(policies_on, KEYCLOAK_IMPORT, KEYCLOAK_DB, 5432)
            assert allowed(policies_on, KEYCLOAK_OPERATOR, Endpoint(ip="10.96.0.1"), 443)

    def test_worker_egress_follows_the_group(self, policies_on: Rendered) -> None:
        v = policies_on.values
        smtp_ip = str(ipaddress.ip_network(v["smtp"]["egressCidrs"][0])[1])
        for deployment in policies_on.of_kind("Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            if labels["app.kubernetes.io/component"] != "worker":
                continue
            worker = Endpoint(labels)
            egress = v["workers"]["groups"][labels["taskhub.io/worker-group"]]["egress"]
            public = Endpoint(ip="93.184.216.34")
            assert allowed(policies_on, worker, public, 443) is egress["webhooks"]
            assert (
                allowed(policies_on, worker, Endpoint(ip=smtp_ip), v["smtp"]["port"])
                is egress["smtp"]
            )
            # Webhooks never reach private addresses (SSRF).
            for private in ("10.0.0.5", "169.254.169.254", "192.168.1.1"):
                assert not allowed(policies_on, worker, Endpoint(ip=private), 443)

    def test_api_has_no_general_internet_egress(self, policies_on: Rendered) -> None:
        api = app_pod(policies_on, "taskhub-api")
        assert not allowed(policies_on, api, Endpoint(ip="93.184.216.34"), 80)


API_SERVER = Endpoint(ip="10.96.0.1")
PUBLIC = Endpoint(ip="93.184.216.34")


def first_ip(cidrs: list[str]) -> str:
    return str(ipaddress.ip_network(cidrs[0])[1])


class TestOperatorPaths:
    """The TaskHub operator and the `helm test` Pod (operator mode)."""

    def operator(self, rendered: Rendered) -> Endpoint | None:
        if not rendered.operator_mode:
            assert rendered.get("Deployment", "taskhub-operator") is None
            assert rendered.get("NetworkPolicy", "taskhub-operator") is None
            return None
        return app_pod(rendered, "taskhub-operator")

    def test_operator_reaches_the_api_server_and_dns(self, policies_on: Rendered) -> None:
        operator = self.operator(policies_on)
        if operator is None:
            return
        for port in policies_on.values["networkPolicy"]["kubeApiServer"]["ports"]:
            assert allowed(policies_on, operator, API_SERVER, port)
        assert allowed(policies_on, operator, DNS, 53, "UDP")
        assert not allowed(policies_on, operator, API_SERVER, 80)

    def test_operator_reaches_the_management_api_only(self, policies_on: Rendered) -> None:
        operator = self.operator(policies_on)
        if operator is None:
            return
        v = policies_on.values
        if v["rabbitmq"]["enabled"]:
            # Both ends: the operator's egress and RabbitMQ's ingress.
            assert allowed(policies_on, operator, RABBITMQ, 15672)
            assert not allowed(policies_on, operator, RABBITMQ, 5672)
        else:
            url = urlsplit(v["operator"]["rabbitmq"]["managementUrl"])
            port = url.port or (443 if url.scheme == "https" else 80)
            broker = Endpoint(ip=first_ip(v["externalBroker"]["egressCidrs"]))
            assert allowed(policies_on, operator, broker, port)
            assert not allowed(policies_on, operator, broker, v["externalBroker"]["port"])
        # (The API server's CIDRs may be 0.0.0.0/0, but only on its ports.)
        assert not allowed(policies_on, operator, PUBLIC, 80)
        if v["postgresql"]["enabled"]:
            assert not allowed(policies_on, operator, PG, 5432)

    def test_only_monitoring_reaches_the_operator(self, policies_on: Rendered) -> None:
        operator = self.operator(policies_on)
        if operator is None:
            return
        prometheus = Endpoint({"app.kubernetes.io/name": "prometheus"}, MONITORING_NS)
        assert allowed(policies_on, prometheus, operator, 8080)
        assert not allowed(policies_on, prometheus, operator, 8081)
        assert not allowed(policies_on, INGRESS_CONTROLLER, operator, 8080)
        assert not allowed(policies_on, app_pod(policies_on, "taskhub-api"), operator, 8080)

    def test_other_app_pods_never_reach_the_management_api(self, policies_on: Rendered) -> None:
        if not policies_on.values["rabbitmq"]["enabled"]:
            return
        for name in ("taskhub-api", "taskhub-relay", "taskhub-test"):
            kind = "Pod" if name == "taskhub-test" else "Deployment"
            assert not allowed(policies_on, app_pod(policies_on, name, kind), RABBITMQ, 15672)

    def test_operator_migration_pods_reach_the_primary(self, policies_on: Rendered) -> None:
        if not (policies_on.operator_mode and policies_on.values["postgresql"]["enabled"]):
            return
        for phase in ("expand", "contract"):
            job = operator_migration_job(policies_on, phase)
            pod = Endpoint(job["spec"]["template"]["metadata"]["labels"])
            assert allowed(policies_on, pod, PG, 5432), phase
            assert allowed(policies_on, pod, DNS, 53, "UDP"), phase
            assert not allowed(policies_on, pod, POOLER_RW, 5432), phase

    def test_helm_test_pod_reaches_the_api(self, policies_on: Rendered) -> None:
        test_pod = app_pod(policies_on, "taskhub-test", kind="Pod")
        api = app_pod(policies_on, "taskhub-api")
        assert allowed(policies_on, test_pod, api, 8000)
        assert allowed(policies_on, test_pod, DNS, 53, "UDP")
        assert not allowed(policies_on, test_pod, app_pod(policies_on, "taskhub-relay"), 8000)
        assert not allowed(policies_on, test_pod, PUBLIC, 443)
        if policies_on.values["rabbitmq"]["enabled"]:
            assert not allowed(policies_on, test_pod, RABBITMQ, 5672)


class TestOtherReleaseNames:
    """The operator labels its Jobs with the TaskHub's name (the full name),
    which differs from the release name unless the release contains "taskhub"."""

    def test_operator_migration_pods_of_release_prod(self) -> None:
        objects, _ = parse(render({}, name="prod"))
        rendered = Rendered("prod", chart().merge_values({}), objects, "")
        taskhub = rendered.taskhub()
        assert taskhub is not None
        assert taskhub["metadata"]["name"] == "prod-taskhub"
        pod = Endpoint(operator_migration_job(rendered)["spec"]["template"]["metadata"]["labels"])
        primary = Endpoint({"cnpg.io/cluster": "prod-taskhub-pg", "cnpg.io/podRole": "instance"})
        assert allowed(rendered, pod, primary, 5432)
        assert allowed(rendered, pod, DNS, 53, "UDP")
