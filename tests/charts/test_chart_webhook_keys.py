"""webhooks.secretKeys and webhooks.allowedNetworks: the keys that encrypt webhook
secrets at rest reach the API and the workers from a Secret (never a rendered value):
existingSecret (default taskhub-webhook-keys, created beforehand like taskhub-auth),
or one the chart generates when existingSecret is empty. The migration pod gets none.
Every rendered object is validated against the Kubernetes schemas."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest
from chart_helpers import Manifest, parse, render
from helm_python import HelmError

from taskhub_api.settings import WebhookSettings

KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
GENERATED = "taskhub-webhook-keys"  # <release>-webhook-keys
GENERATE = {"webhooks": {"secretKeys": {"existingSecret": ""}}}
NEEDS_KEYS = {"api", "worker"}


def objects(values: dict[str, Any]) -> list[Manifest]:
    return parse(render(values))[0]


def component(obj: Manifest) -> str:
    return str(obj["metadata"]["labels"].get("app.kubernetes.io/component"))


def webhook_env(template: Manifest) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", [])
        for e in c.get("env", [])
        if e["name"].startswith("TASKHUB_WEBHOOKS__")
    }


def deployments(rendered: list[Manifest]) -> dict[str, Manifest]:
    return {
        o["metadata"]["name"]: o
        for o in rendered
        if o["kind"] == "Deployment" and component(o) in NEEDS_KEYS
    }


def assert_valid(rendered: list[Manifest]) -> None:
    errors = []
    for obj in rendered:
        if obj["apiVersion"].split("/")[0].endswith((".io", ".com", ".org")):
            continue  # custom resources: test_chart_crds.py and test_chart_taskhub.py
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {exc}")
    assert errors == []


class TestDefaults:
    def test_the_prerequisite_secret_is_referenced_and_nothing_generated(self) -> None:
        rendered = objects({})
        assert_valid(rendered)
        assert not [o for o in rendered if o["kind"] == "Secret" and "webhook" in str(o)]
        for name, deployment in deployments(rendered).items():
            env = webhook_env(deployment["spec"]["template"])
            ref = {"secretKeyRef": {"name": "taskhub-webhook-keys", "key": "secret-keys"}}
            assert env == {"TASKHUB_WEBHOOKS__SECRET_KEYS": ref}, name

    def test_the_migration_pod_gets_no_keys(self) -> None:
        checked = 0
        for obj in objects({}):
            if obj["kind"] == "Job":
                assert webhook_env(obj["spec"]["template"]) == {}
                checked += 1
            if obj["kind"] == "TaskHub" and "template" in obj["spec"].get("migrations", {}):
                assert webhook_env(obj["spec"]["migrations"]["template"]) == {}
                checked += 1
        assert checked


class TestGeneratedKeys:
    def test_one_key_generated_kept_and_passed_to_api_and_workers(self) -> None:
        rendered = objects(GENERATE)
        assert_valid(rendered)
        (secret,) = [
            o for o in rendered if o["kind"] == "Secret" and o["metadata"]["name"] == GENERATED
        ]
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        keys = json.loads(base64.b64decode(secret["data"]["secret-keys"]))
        assert list(keys) == ["k1"] and len(base64.b64decode(keys["k1"])) == 32
        # What the application makes of it.
        settings = WebhookSettings.model_validate({"secret_keys": keys})
        assert list(settings.secret_keys) == ["k1"]

        found = deployments(rendered)
        assert {component(d) for d in found.values()} == NEEDS_KEYS
        for name, deployment in found.items():
            env = webhook_env(deployment["spec"]["template"])
            ref = {"secretKeyRef": {"name": GENERATED, "key": "secret-keys"}}
            assert env == {"TASKHUB_WEBHOOKS__SECRET_KEYS": ref}, name
        # Never a key rendered as a plain value anywhere.
        text = json.dumps([o for o in rendered if o["kind"] != "Secret"])
        assert keys["k1"] not in text

    def test_each_render_without_a_cluster_generates_a_new_key(self) -> None:
        # Why GitOps renderers need existingSecret (values.yaml says so).
        def key() -> str:
            (secret,) = [o for o in objects(GENERATE) if o["metadata"]["name"] == GENERATED]
            return str(secret["data"]["secret-keys"])

        assert key() != key()


EXISTING: dict[str, Any] = {
    "webhooks": {
        "secretKeys": {
            "existingSecret": "prod-webhook-keys",
            "secretKeysKey": "keys.json",
            "activeKeyId": "2026-12",
        },
        "allowedNetworks": ["10.42.0.0/16", "fd12:3456::/48"],
    }
}


class TestExistingSecret:
    def test_is_referenced_and_nothing_is_generated(self) -> None:
        rendered = objects(EXISTING)
        assert_valid(rendered)
        assert not [o for o in rendered if o["metadata"]["name"] == GENERATED]
        for name, deployment in deployments(rendered).items():
            env = webhook_env(deployment["spec"]["template"])
            assert env == {
                "TASKHUB_WEBHOOKS__SECRET_KEYS": {
                    "secretKeyRef": {"name": "prod-webhook-keys", "key": "keys.json"}
                },
                "TASKHUB_WEBHOOKS__ACTIVE_KEY_ID": "2026-12",
                "TASKHUB_WEBHOOKS__ALLOWED_NETWORKS": '["10.42.0.0/16","fd12:3456::/48"]',
            }, name
            # The application reads the allow-list in this form.
            networks = json.loads(env["TASKHUB_WEBHOOKS__ALLOWED_NETWORKS"])
            assert [
                str(n) for n in WebhookSettings(allowed_networks=networks).allowed_networks
            ] == networks

    @pytest.mark.parametrize(
        "webhooks",
        [
            {"secretKeys": {"activeKeyId": "has space"}},
            {"secretKeys": {"existingSecret": "Not_A_Name"}},
            {"secretKeys": {"secretKeysKey": ""}},
            {"secretKeys": {"unknown": 1}},
            {"allowedNetworks": ["10.0.0.0"]},
            {"allowNetworks": []},
        ],
    )
    def test_the_schema_rejects(self, webhooks: dict[str, Any]) -> None:
        with pytest.raises(HelmError):
            render({"webhooks": webhooks})
