"""Every request the operator made in the other operator tests (kmock's request
log) is allowed by the chart's Role, and every verb the Role grants was used.

Collected after every other test of tests/operator (conftest moves this file
last). Run alone, it drives a rollout of its own and checks one way only: that
each request is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.charts.chart_helpers import rendered_profile
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import OPERATOR_AGENTS, OPERATOR_REQUESTS, Cluster
from tests.operator.test_rollout import NEW, bring_up, complete_rollout, set_image

# Discovery is allowed to every authenticated user (system:discovery).
DISCOVERY = ("/api", "/apis", "/version")


@dataclass(frozen=True)
class Access:
    group: str
    resource: str  # with its subresource: "deployments/scale"
    verb: str
    name: str | None


def access(method: str, path: str, params: dict[str, str]) -> Access | None:
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise AssertionError(f"not a Kubernetes API path: {path}")
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return None  # discovery of a group version
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    name = rest[1] if len(rest) > 1 else None
    verb = {
        "GET": "watch" if params.get("watch") in ("true", "1") else ("get" if name else "list"),
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete",
    }[method]
    return Access(group, resource, verb, name)


def operator_role() -> list[dict[str, Any]]:
    rendered = rendered_profile("defaults")
    roles = [
        r
        for r in rendered.of_kind("Role")
        if r["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert len(roles) == 1, [r["metadata"]["name"] for r in rendered.of_kind("Role")]
    return list(roles[0]["rules"])


def allows(rule: dict[str, Any], wanted: Access) -> bool:
    return (
        wanted.group in rule["apiGroups"]
        and wanted.resource in rule["resources"]
        and wanted.verb in rule["verbs"]
        and (not rule.get("resourceNames") or wanted.name in rule["resourceNames"])
    )


async def test_the_role_allows_exactly_what_the_operator_does(
    cluster: Cluster, operator: Any, apiserver: ApiServer
) -> None:
    alone = not OPERATOR_REQUESTS
    if alone:  # run alone: make some traffic of its own (no scaling: no RabbitMQ)
        await bring_up(cluster)
        await set_image(cluster, NEW)
        await complete_rollout(cluster, NEW)
    own = [
        (r.method, r.url.path, dict(r.params))
        for r in apiserver
        if r.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS)
    ]
    made = {
        found
        for method, path, params in [*OPERATOR_REQUESTS, *own]
        if not path.startswith(DISCOVERY) or path.count("/") > 3
        for found in [access(method, path, params)]
        if found is not None
    }
    rules = operator_role()
    denied = sorted(str(a) for a in made if not any(allows(rule, a) for rule in rules))
    assert not denied, f"the chart's Role misses: {denied}"
    if alone:
        return  # only the whole suite uses every verb
    unused = sorted(
        f"{group}/{resource} {verb}"
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not any(a.group == group and a.resource == resource and a.verb == verb for a in made)
    )
    assert not unused, f"the chart's Role grants what the operator never does: {unused}"
