"""The TaskHub resource the chart renders in operator mode, checked the way the
API server would check it against our own CRD (charts/taskhub/crds/): schema
defaults first, then the OpenAPI schema with unknown fields rejected (as with
fieldValidation=Strict), list types, and every x-kubernetes-validations CEL
rule (cel-python). Plus the contract with the operator: the migration Job it
builds from the TaskHub is the chart's migration pod."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import celpy
import kubernetes_validate
import pytest
from chart_helpers import (
    PROFILES,
    Manifest,
    Rendered,
    apply_defaults,
    cel_errors,
    operator_migration_job,
    parse,
    render,
    rendered_profile,
    taskhub_crd,
    taskhub_errors,
    taskhub_schema,
)
from test_chart_render import KUBE_VERSIONS

OPERATOR_PROFILES = sorted(p for p in PROFILES if rendered_profile(p).operator_mode)


def rendered_taskhub(profile: str = "defaults") -> Manifest:
    taskhub = rendered_profile(profile).taskhub()
    assert taskhub is not None
    return copy.deepcopy(taskhub)


def every_rule(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = list(node.get("x-kubernetes-validations", []))
        return found + [r for v in node.values() for r in every_rule(v)]
    if isinstance(node, list):
        return [r for v in node for r in every_rule(v)]
    return []


class TestCrd:
    def test_names_and_version(self) -> None:
        crd = taskhub_crd()
        assert crd["metadata"]["name"] == "taskhubs.taskhub.io"
        assert crd["spec"]["scope"] == "Namespaced"
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}

    def test_every_rule_compiles_and_has_a_message(self) -> None:
        rules = every_rule(taskhub_schema())
        assert len(rules) >= 6
        env = celpy.Environment()
        for rule in rules:
            env.compile(rule["rule"])
            assert rule.get("message"), rule

    def test_printer_columns_show_migrated_and_ready(self) -> None:
        (version,) = taskhub_crd()["spec"]["versions"]
        names = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Image", "Migrated", "Ready"} <= names


class TestValidatorMachinery:
    """The validator itself: defaults and CEL do what the API server does."""

    def test_defaults_are_applied_before_validation(self) -> None:
        stored = apply_defaults(
            taskhub_schema(),
            {"spec": {"image": "x:1", "workers": [{"deployment": "w", "queues": ["q"]}]}},
        )
        spec = stored["spec"]
        assert spec["paused"] is False
        # An object default ({}) is defaulted in turn.
        assert spec["migrations"] == {
            "enabled": True,
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 86400,
        }
        assert spec["workers"][0]["minReplicas"] == 1
        assert spec["workers"][0]["targetMessagesPerReplica"] == 20

    def test_a_false_rule_reports_its_message(self) -> None:
        schema = {"x-kubernetes-validations": [{"rule": "self.a < self.b", "message": "a<b"}]}
        assert cel_errors(schema, {"a": 1, "b": 2}) == []
        assert cel_errors(schema, {"a": 2, "b": 1}) == ["<root>: a<b"]
        # A rule that cannot be evaluated (missing field) is an error too.
        assert "failed to evaluate" in cel_errors(schema, {"a": 1})[0]

    def test_rules_are_evaluated_on_nested_values(self) -> None:
        taskhub = rendered_taskhub()
        taskhub["spec"]["rabbitmq"]["managementUrl"] = "amqp://broker"
        assert taskhub_errors(taskhub) == [
            "spec.rabbitmq.managementUrl: managementUrl must be an http:// or https:// URL"
        ]


class TestRenderedTaskHub:
    @pytest.mark.parametrize("profile", OPERATOR_PROFILES)
    def test_valid_against_the_crd(self, profile: str) -> None:
        assert taskhub_errors(rendered_taskhub(profile)) == []

    def test_operator_profiles_exist(self) -> None:
        assert {"defaults", "production", "external-services", "dev"} <= set(OPERATOR_PROFILES)
        assert len(OPERATOR_PROFILES) < len(PROFILES), "a profile must render the operator off"

    @pytest.mark.parametrize("profile", OPERATOR_PROFILES)
    def test_built_from_values(self, profile: str) -> None:
        rendered = rendered_profile(profile)
        v = rendered.values
        taskhub = rendered_taskhub(profile)
        assert taskhub["apiVersion"] == "taskhub.io/v1alpha1"
        assert taskhub["metadata"]["name"] == "taskhub"
        spec = taskhub["spec"]
        tag = v["image"]["tag"] or "0.1.0"
        assert spec["image"] == f"{v['image']['repository']}:{tag}"
        assert spec["paused"] is v["operator"]["paused"]
        migrations = spec["migrations"]
        assert migrations["enabled"] is v["migrations"]["enabled"]
        assert migrations["backoffLimit"] == v["migrations"]["backoffLimit"]
        assert migrations["activeDeadlineSeconds"] == v["migrations"]["activeDeadlineSeconds"]
        names = [d["name"] for d in spec["deployments"]]
        assert names[:3] == ["taskhub-api", "taskhub-relay", "taskhub-beat"]

    def test_digest_pins_the_image(self) -> None:
        digest = "sha256:" + "a" * 64
        objects, _ = parse(render({"image": {"tag": "1.2.3", "digest": digest}}))
        (taskhub,) = [o for o in objects if o["kind"] == "TaskHub"]
        assert taskhub["spec"]["image"] == f"ghcr.io/taskhub/taskhub:1.2.3@{digest}"
        assert taskhub_errors(taskhub) == []


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def change(taskhub: Manifest) -> None:
        node = taskhub
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


def _duplicate_worker(taskhub: Manifest) -> None:
    workers = taskhub["spec"]["workers"]
    workers.append({**workers[0], "queues": ["other"]})


def _drop(path: str) -> Callable[[Manifest], None]:
    def change(taskhub: Manifest) -> None:
        *parents, last = path.split(".")
        node = taskhub
        for key in parents:
            node = node[key]
        del node[last]

    return change


REJECTED = [
    pytest.param(
        [_set("spec.workers.0.minReplicas", 7), _set("spec.workers.0.maxReplicas", 3)],
        "spec.workers[0]: minReplicas must not exceed maxReplicas",
        id="min-above-max",
    ),
    pytest.param(
        [_set("spec.workers.0.targetMessagesPerReplica", -5)],
        "spec.workers[0].targetMessagesPerReplica: -5 is less than the minimum of 1",
        id="negative-target",
    ),
    pytest.param(
        [_set("spec.replicas", 3)],
        "spec: Additional properties are not allowed ('replicas' was unexpected)",
        id="unknown-spec-field",
    ),
    pytest.param(
        [_set("spec.workers.0.queue", "typo")],
        "spec.workers[0]: Additional properties are not allowed ('queue' was unexpected)",
        id="unknown-worker-field",
    ),
    pytest.param(
        [_drop("spec.rabbitmq")],
        "spec: spec.rabbitmq is required when spec.workers is set",
        id="workers-without-rabbitmq",
    ),
    pytest.param(
        [_set("spec.image", "ghcr.io/taskhub/taskhub:latest")],
        "spec.image: pin an image tag or digest, not :latest",
        id="latest",
    ),
    pytest.param(
        [_drop("spec.migrations.template")],
        "spec.migrations: spec.migrations.template is required when migrations are enabled",
        id="migrations-without-template",
    ),
    pytest.param(
        [_drop("spec.migrations.template"), _drop("spec.migrations.enabled")],
        "spec.migrations: spec.migrations.template is required when migrations are enabled",
        id="enabled-by-default-without-template",
    ),
    pytest.param(
        [_duplicate_worker],
        "spec: each worker Deployment may be listed only once",
        id="duplicate-worker",
    ),
    pytest.param(
        [_set("spec.deployments", [{"name": "a"}, {"name": "a"}])],
        "spec.deployments: duplicate entries in a list of type map",
        id="duplicate-deployment",
    ),
]


class TestRejected:
    @pytest.mark.parametrize(("changes", "message"), REJECTED)
    def test_with_the_crds_message(
        self, changes: list[Callable[[Manifest], None]], message: str
    ) -> None:
        taskhub = rendered_taskhub()
        for change in changes:
            change(taskhub)
        errors = taskhub_errors(taskhub)
        assert message in errors, errors

    def test_migrations_disabled_need_no_template(self) -> None:
        taskhub = rendered_taskhub()
        taskhub["spec"]["migrations"] = {"enabled": False}
        assert taskhub_errors(taskhub) == []

    def test_no_workers_need_no_rabbitmq(self) -> None:
        taskhub = rendered_taskhub()
        del taskhub["spec"]["workers"], taskhub["spec"]["rabbitmq"]
        assert taskhub_errors(taskhub) == []


def strip_operator_fields(pod: Manifest) -> Manifest:
    """A Job's pod spec less what the operator sets itself."""
    pod = copy.deepcopy(pod)
    pod.pop("restartPolicy", None)
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        container.pop("image", None)
        if container["name"] == "migrate":
            container.pop("args", None)
    return pod


class TestMigrationTemplate:
    @pytest.mark.parametrize(
        "values",
        [
            {},
            {"bootstrapAdmin": {"enabled": True, "existingSecret": "admin"}},
            {"postgresql": {"enabled": False}, "externalDatabase": {"existingSecret": "db"}},
            {"imagePullSecrets": ["registry"], "migrations": {"backoffLimit": 3}},
        ],
        ids=["defaults", "bootstrap-admin", "external-db", "pull-secrets"],
    )
    def test_same_pod_as_the_charts_job(self, values: dict[str, Any]) -> None:
        off, _ = parse(render({**values, "operator": {"enabled": False}}))
        on, _ = parse(render({**values, "operator": {"enabled": True}}))
        (job,) = [o for o in off if o["kind"] == "Job"]
        (taskhub,) = [o for o in on if o["kind"] == "TaskHub"]
        template = taskhub["spec"]["migrations"]["template"]
        assert template["spec"] == strip_operator_fields(job["spec"]["template"]["spec"])
        assert template["metadata"] == job["spec"]["template"]["metadata"]
        assert [o["metadata"]["name"] for o in on if o["kind"] == "Job"] == [
            "taskhub-operator-uninstall"  # the pre-delete hook, not a migration
        ]

    def test_bootstrap_admin_keeps_its_args(self) -> None:
        objects, _ = parse(render({"bootstrapAdmin": {"enabled": True, "existingSecret": "admin"}}))
        (taskhub,) = [o for o in objects if o["kind"] == "TaskHub"]
        pod = taskhub["spec"]["migrations"]["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] == ["migrate"]
        assert [(c["name"], c["args"]) for c in pod["containers"]] == [
            ("bootstrap-admin", ["bootstrap-admin"])
        ]


class TestOperatorContract:
    """The Job the operator's own builder (taskhub_operator.jobs) makes from the
    rendered TaskHub is valid Kubernetes and runs `taskhub migrate`."""

    @pytest.mark.parametrize("profile", OPERATOR_PROFILES)
    @pytest.mark.parametrize("phase", ["expand", "contract"])
    def test_operator_job_is_valid(
        self, profile: str, phase: Literal["expand", "contract"]
    ) -> None:
        rendered: Rendered = rendered_profile(profile)
        job = operator_migration_job(rendered, phase)
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(job, version, strict=True)
        pod = job["spec"]["template"]["spec"]
        everything = [*pod.get("initContainers", []), *pod["containers"]]
        image = rendered_taskhub(profile)["spec"]["image"]
        assert {c["image"] for c in everything} == {image}
        (migrate,) = [c for c in everything if c["name"] == "migrate"]
        assert migrate["args"] == ["migrate", "--phase", phase]
        assert pod["restartPolicy"] == "Never"
        assert pod["serviceAccountName"] == "taskhub"

    def test_notes_name_the_operators_job(self) -> None:
        rendered = rendered_profile("defaults")
        job = operator_migration_job(rendered, "expand")
        assert f"kubectl -n taskhub logs job/{job['metadata']['name']} -f" in rendered.notes
        assert "kubectl -n taskhub get taskhub taskhub -w" in rendered.notes
