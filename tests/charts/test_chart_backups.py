"""PostgreSQL backups (postgresql.backup) and the restore runbook's objects.

Off by default; on, the CNPG Cluster archives WAL and base backups to the
object store, a ScheduledBackup names the Cluster, and a NetworkPolicy lets
the instances reach the store. Every rendered object, and the recovery
Cluster of k8s/restore/, is validated as the API server would: core kinds
with kubernetes-validate --strict, custom resources against the real CRDs in
../shared/crds with unknown fields rejected, defaults applied and CEL rules
evaluated.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from functools import cache
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CRD_DIR,
    REPO_ROOT,
    Manifest,
    apply_defaults,
    cel_errors,
    chart,
    field_path,
    forbid_unknown_fields,
    list_type_errors,
    merged,
    parse,
    render,
    rendered_profile,
    selector_matches,
    taskhub_errors,
)

KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
RESTORE_DIR = REPO_ROOT / "k8s" / "restore"

BUCKET = "s3://taskhub-backups-test/pg"
S3 = {
    "enabled": True,
    "destinationPath": BUCKET,
    "existingSecret": "taskhub-backup-s3",
}
ON: dict[str, Any] = {"postgresql": {"backup": S3}}
# The API server only on its own address, so that the object store is
# reachable through the backup policy alone.
TIGHT_API = {"networkPolicy": {"kubeApiServer": {"cidrs": ["10.96.0.1/32"]}}}
PUBLIC_STORE = "52.216.0.10"
# The CRDs are large; libyaml's loader reads them in a fraction of the time.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def objects(values: dict[str, Any], name: str = "taskhub") -> list[Manifest]:
    """The rendered objects (a fresh copy: tests may change them)."""
    return copy.deepcopy(_objects(json.dumps(values, sort_keys=True), name))


@cache
def _objects(values: str, name: str) -> list[Manifest]:
    return parse(render(json.loads(values), name=name))[0]


def one(found: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [o for o in found if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def app_cluster(found: list[Manifest]) -> Manifest:
    return one(found, "Cluster", "taskhub-pg")


def with_backup(**backup: Any) -> dict[str, Any]:
    return {"postgresql": {"backup": {**S3, **backup}}}


# -- Validation as the API server would do it --------------------------------


@cache
def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, kind, version) -> openAPIV3Schema of every served version of
    every CRD in the shared directory."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.y*ml")):
        for crd in yaml.load_all(path.read_text(), Loader=FAST_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (spec["group"], spec["names"]["kind"], version["name"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@cache
def crd_validation(
    key: tuple[str, str, str],
) -> tuple[dict[str, Any], Any, jsonschema.protocols.Validator]:
    """The schema, its rules that apply on creation (transition rules, with
    oldSelf, run only on updates) and a strict validator."""
    schemas = crd_schemas()
    assert key in schemas, f"no CRD in {CRD_DIR} serves {key}"
    schema = schemas[key]
    validator = jsonschema.Draft4Validator(forbid_unknown_fields(schema))
    return schema, without_transition_rules(schema), validator


def crd_errors(obj: Manifest) -> list[str]:
    group, version = obj["apiVersion"].split("/")
    schema, creation, validator = crd_validation((group, obj["kind"], version))
    defaulted = apply_defaults(schema, obj)
    errors = [
        f"{field_path(''.join(f'[{k}]' if isinstance(k, int) else f'.{k}' for k in e.path))}: "
        f"{e.message}"
        for e in validator.iter_errors(defaulted)
    ]
    return errors + list_type_errors(schema, defaulted) + cel_errors(creation, defaulted)


def without_transition_rules(schema: Any) -> Any:
    if isinstance(schema, list):
        return [without_transition_rules(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: without_transition_rules(v) for k, v in schema.items()}
    if "x-kubernetes-validations" in schema:
        out["x-kubernetes-validations"] = [
            r for r in schema["x-kubernetes-validations"] if "oldSelf" not in r["rule"]
        ]
    return out


def object_errors(obj: Manifest) -> list[str]:
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"].startswith("taskhub.io/"):
        return [f"{name}: {e}" for e in taskhub_errors(obj)]
    group = obj["apiVersion"].rpartition("/")[0]
    if any(group == served_group for served_group, _, _ in crd_schemas()):
        return [f"{name}: {e}" for e in crd_errors(obj)]
    errors = []
    for kube_version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name} ({kube_version}): {path}: {exc.message}")
    return errors


def all_errors(found: list[Manifest]) -> list[str]:
    return [e for obj in found for e in object_errors(obj)]


def egress_allows(found: list[Manifest], pod: dict[str, str], ip: str, port: int) -> bool:
    """Whether some egress rule of a policy that selects the pod lets it reach
    ip:port (rules with ipBlock peers only; enough for an external store)."""
    address = ipaddress.ip_address(ip)
    for policy in found:
        if policy["kind"] != "NetworkPolicy" or "Egress" not in policy["spec"]["policyTypes"]:
            continue
        if not selector_matches(policy["spec"]["podSelector"], pod):
            continue
        for rule in policy["spec"].get("egress", []):
            ports = rule.get("ports") or [{"port": port}]
            if all(p["port"] != port for p in ports):
                continue
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block and address in ipaddress.ip_network(block["cidr"]):
                    return True
    return False


PG_POD = {"cnpg.io/cluster": "taskhub-pg", "cnpg.io/podRole": "instance"}


class TestValidator:
    def test_catches_an_unknown_backup_field(self) -> None:
        cluster = app_cluster(objects(ON))
        cluster["spec"]["backup"]["barmanObjectStore"]["wal"]["maxParalel"] = 2
        assert any("maxParalel" in e for e in crd_errors(cluster))

    def test_catches_a_bad_retention_policy_and_a_missing_cluster(self) -> None:
        found = objects(ON)
        cluster = app_cluster(found)
        cluster["spec"]["backup"]["retentionPolicy"] = "30 days"
        assert any("retentionPolicy" in e for e in crd_errors(cluster))
        scheduled = one(found, "ScheduledBackup")
        del scheduled["spec"]["cluster"]
        assert any("'cluster' is a required property" in e for e in crd_errors(scheduled))

    def test_the_scheduled_backup_crd_is_the_shared_one(self) -> None:
        assert ("postgresql.cnpg.io", "ScheduledBackup", "v1") in crd_schemas()
        assert (CRD_DIR / "postgresql.cnpg.io_scheduledbackups.yaml").is_file()


class TestBackupsOff:
    def test_default_renders_no_backup(self) -> None:
        found = objects({})
        assert "backup" not in app_cluster(found)["spec"]
        assert [o for o in found if o["kind"] in ("ScheduledBackup", "Backup")] == []
        assert [o for o in found if o["metadata"]["name"] == "taskhub-pg-backup"] == []

    def test_default_values_are_off(self) -> None:
        backup = chart().merge_values({})["postgresql"]["backup"]
        assert backup["enabled"] is False
        assert backup["destinationPath"] == ""
        assert backup["existingSecret"] == ""

    def test_no_store_egress_when_off(self) -> None:
        found = objects(TIGHT_API)
        assert not egress_allows(found, PG_POD, PUBLIC_STORE, 443)

    def test_every_object_validates(self) -> None:
        assert all_errors(objects({})) == []


class TestBackupsOn:
    def test_every_object_validates(self) -> None:
        assert all_errors(objects(ON)) == []

    def test_cluster_archives_to_the_bucket(self) -> None:
        backup = app_cluster(objects(ON))["spec"]["backup"]
        store = backup["barmanObjectStore"]
        assert store["destinationPath"] == BUCKET
        assert "serverName" not in store  # the Cluster's name
        assert "endpointURL" not in store
        assert store["s3Credentials"] == {
            "accessKeyId": {"name": "taskhub-backup-s3", "key": "ACCESS_KEY_ID"},
            "secretAccessKey": {"name": "taskhub-backup-s3", "key": "ACCESS_SECRET_KEY"},
        }
        assert store["wal"] == {"compression": "gzip", "maxParallel": 8}
        assert store["data"] == {"compression": "gzip", "jobs": 2}
        assert backup["retentionPolicy"] == "30d"
        assert backup["target"] == "prefer-standby"

    def test_scheduled_backup_names_the_cluster(self) -> None:
        found = objects(ON)
        scheduled = one(found, "ScheduledBackup", "taskhub-pg-backup")
        spec = scheduled["spec"]
        assert spec["cluster"]["name"] == app_cluster(found)["metadata"]["name"]
        assert spec["schedule"] == "0 0 3 * * *"
        assert len(spec["schedule"].split()) == 6  # seconds first
        assert spec["immediate"] is True
        assert spec["backupOwnerReference"] == "self"
        assert spec["method"] == "barmanObjectStore"
        assert spec["suspend"] is False

    def test_scheduled_backup_follows_the_release_name(self) -> None:
        found = objects(ON, name="prod")
        scheduled = one(found, "ScheduledBackup")
        assert scheduled["spec"]["cluster"]["name"] == "prod-taskhub-pg"
        assert one(found, "Cluster", "prod-taskhub-pg")["spec"]["backup"]

    def test_egress_policy_lets_the_instances_reach_the_store(self) -> None:
        found = objects(merged(ON, TIGHT_API))
        policy = one(found, "NetworkPolicy", "taskhub-pg-backup")
        assert selector_matches(policy["spec"]["podSelector"], PG_POD)
        assert policy["spec"]["policyTypes"] == ["Egress"]
        assert egress_allows(found, PG_POD, PUBLIC_STORE, 443)
        assert not egress_allows(found, PG_POD, PUBLIC_STORE, 80)
        # Only the database pods: not the API, not PgBouncer.
        api = {"app.kubernetes.io/name": "taskhub", "app.kubernetes.io/component": "api"}
        pooler = {"cnpg.io/poolerName": "taskhub-pg-pooler-rw"}
        for pod in (api, pooler):
            assert not selector_matches(policy["spec"]["podSelector"], pod)

    def test_egress_follows_the_values(self) -> None:
        egress = {"cidrs": ["192.0.2.0/24"], "ports": [9000]}
        found = objects(merged(with_backup(egress=egress), TIGHT_API))
        assert egress_allows(found, PG_POD, "192.0.2.7", 9000)
        assert not egress_allows(found, PG_POD, PUBLIC_STORE, 443)

    def test_no_egress_policy_without_network_policies(self) -> None:
        found = objects(merged(ON, {"networkPolicy": {"enabled": False}}))
        assert [o for o in found if o["kind"] == "NetworkPolicy"] == []
        assert one(found, "ScheduledBackup")

    def test_production_profile_backs_up(self) -> None:
        rendered = rendered_profile("production")
        cluster = rendered.get("Cluster", "taskhub-pg")
        assert cluster is not None
        assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
        (scheduled,) = rendered.of_kind("ScheduledBackup")
        assert scheduled["spec"]["cluster"]["name"] == "taskhub-pg"
        assert rendered.get("NetworkPolicy", "taskhub-pg-backup") is not None
        assert [
            e for o in rendered.of_kind("Cluster", "ScheduledBackup") for e in crd_errors(o)
        ] == []


class TestProviders:
    @pytest.mark.parametrize(
        ("backup", "credentials"),
        [
            pytest.param(
                {
                    "endpointURL": "https://minio.storage.svc:9000",
                    "s3": {"regionKey": "REGION", "sessionTokenKey": "TOKEN"},
                },
                {
                    "s3Credentials": {
                        "accessKeyId": {"name": "creds", "key": "ACCESS_KEY_ID"},
                        "secretAccessKey": {"name": "creds", "key": "ACCESS_SECRET_KEY"},
                        "region": {"name": "creds", "key": "REGION"},
                        "sessionToken": {"name": "creds", "key": "TOKEN"},
                    }
                },
                id="s3-compatible",
            ),
            pytest.param(
                {"existingSecret": "", "s3": {"inheritFromIAMRole": True}},
                {"s3Credentials": {"inheritFromIAMRole": True}},
                id="s3-iam-role",
            ),
            pytest.param(
                {
                    "provider": "azure",
                    "destinationPath": "https://acct.blob.core.windows.net/c/pg",
                },
                {
                    "azureCredentials": {
                        "storageAccount": {"name": "creds", "key": "AZURE_STORAGE_ACCOUNT"},
                        "storageKey": {"name": "creds", "key": "AZURE_STORAGE_KEY"},
                    }
                },
                id="azure-key",
            ),
            pytest.param(
                {
                    "provider": "azure",
                    "destinationPath": "https://acct.blob.core.windows.net/c/pg",
                    "azure": {"storageSasTokenKey": "SAS"},
                },
                {
                    "azureCredentials": {
                        "storageAccount": {"name": "creds", "key": "AZURE_STORAGE_ACCOUNT"},
                        "storageSasToken": {"name": "creds", "key": "SAS"},
                    }
                },
                id="azure-sas",
            ),
            pytest.param(
                {
                    "provider": "azure",
                    "destinationPath": "https://acct.blob.core.windows.net/c/pg",
                    "azure": {"connectionStringKey": "CONN"},
                },
                {"azureCredentials": {"connectionString": {"name": "creds", "key": "CONN"}}},
                id="azure-connection-string",
            ),
            pytest.param(
                {"provider": "google", "destinationPath": "gs://bucket/pg"},
                {
                    "googleCredentials": {
                        "applicationCredentials": {"name": "creds", "key": "gcsCredentials"}
                    }
                },
                id="google",
            ),
            pytest.param(
                {
                    "provider": "google",
                    "destinationPath": "gs://bucket/pg",
                    "existingSecret": "",
                    "google": {"gkeEnvironment": True},
                },
                {"googleCredentials": {"gkeEnvironment": True}},
                id="google-workload-identity",
            ),
        ],
    )
    def test_credentials(self, backup: dict[str, Any], credentials: dict[str, Any]) -> None:
        found = objects({"postgresql": {"backup": merged(S3, {"existingSecret": "creds"}, backup)}})
        cluster = app_cluster(found)
        store = cluster["spec"]["backup"]["barmanObjectStore"]
        provider_keys = {"s3Credentials", "azureCredentials", "googleCredentials"}
        assert {k: v for k, v in store.items() if k in provider_keys} == credentials
        if "endpointURL" in backup:
            assert store["endpointURL"] == backup["endpointURL"]
        assert crd_errors(cluster) == []

    def test_volume_snapshot_method(self) -> None:
        scheduled_backup = {"method": "volumeSnapshot", "volumeSnapshotClassName": "csi-snap"}
        found = objects(with_backup(scheduledBackup=scheduled_backup))
        backup = app_cluster(found)["spec"]["backup"]
        assert backup["volumeSnapshot"] == {"className": "csi-snap"}
        # WAL still goes to the bucket (point-in-time recovery).
        assert backup["barmanObjectStore"]["destinationPath"] == BUCKET
        assert one(found, "ScheduledBackup")["spec"]["method"] == "volumeSnapshot"
        assert all_errors([o for o in found if o["kind"] in ("Cluster", "ScheduledBackup")]) == []

    def test_compression_can_be_off(self) -> None:
        found = objects(with_backup(wal={"compression": ""}, data={"compression": ""}))
        store = app_cluster(found)["spec"]["backup"]["barmanObjectStore"]
        assert "compression" not in store["wal"]
        assert "compression" not in store["data"]
        assert crd_errors(app_cluster(found)) == []


class TestGuards:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            pytest.param(
                with_backup(destinationPath=""),
                "postgresql.backup.enabled needs postgresql.backup.destinationPath",
                id="no-bucket",
            ),
            pytest.param(
                with_backup(existingSecret=""),
                "postgresql.backup needs postgresql.backup.existingSecret",
                id="no-credentials",
            ),
            pytest.param(
                with_backup(provider="google", destinationPath="gs://b/p", existingSecret=""),
                "the Secret with the google object-store credentials",
                id="no-google-credentials",
            ),
            pytest.param(
                with_backup(scheduledBackup={"method": "volumeSnapshot"}),
                "needs postgresql.backup.scheduledBackup.volumeSnapshotClassName",
                id="no-snapshot-class",
            ),
            pytest.param(
                merged(ON, {"postgresql": {"recovery": {"enabled": True}}}),
                'set postgresql.backup.serverName to a new folder (not "taskhub-pg"',
                id="recovery-into-its-own-archive",
            ),
            pytest.param(
                {"postgresql": {"backup": {"existingSecret": "c"}, "recovery": {"enabled": True}}},
                "postgresql.recovery.enabled needs postgresql.recovery.destinationPath",
                id="recovery-without-a-bucket",
            ),
        ],
    )
    def test_render_fails_with_message(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmRenderError) as excinfo:
            render(values)
        assert message in str(excinfo.value)

    @pytest.mark.parametrize(
        ("backup", "message"),
        [
            pytest.param(
                {"scheduledBackup": {"schedule": "0 3 * * *"}},
                "at '/postgresql/backup/scheduledBackup/schedule'",
                id="five-field-cron",
            ),
            pytest.param(
                {"retentionPolicy": "30 days"},
                "at '/postgresql/backup/retentionPolicy'",
                id="retention",
            ),
            pytest.param(
                {"destinationPath": "bucket/pg"},
                "at '/postgresql/backup/destinationPath'",
                id="not-a-url",
            ),
            pytest.param(
                {"wal": {"compression": "zip"}},
                "at '/postgresql/backup/wal/compression'",
                id="wal-compression",
            ),
            pytest.param(
                {"data": {"compression": "zstd"}},
                "at '/postgresql/backup/data/compression'",
                id="data-compression-zstd-is-wal-only",
            ),
            pytest.param(
                {"scheduledBackup": {"backupOwnerReference": "release"}},
                "at '/postgresql/backup/scheduledBackup/backupOwnerReference'",
                id="owner",
            ),
            pytest.param(
                {"provider": "swift"},
                "at '/postgresql/backup/provider'",
                id="provider",
            ),
            pytest.param(
                {"egress": {"cidrs": []}},
                "at '/postgresql/backup/egress/cidrs'",
                id="egress-to-nowhere",
            ),
        ],
    )
    def test_schema_rejects(self, backup: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmValuesError) as excinfo:
            render(with_backup(**backup))
        assert message in str(excinfo.value)

    def test_six_field_crons_and_descriptors_pass(self) -> None:
        for schedule in ("0 30 2 * * 0", "@daily", "@every 6h"):
            found = objects(with_backup(scheduledBackup={"schedule": schedule}))
            assert one(found, "ScheduledBackup")["spec"]["schedule"] == schedule


class TestRecoveryMode:
    """postgresql.recovery: the chart's Cluster bootstrapped from the bucket
    (the runbook's cut-over)."""

    VALUES = merged(
        ON,
        {
            "postgresql": {
                "backup": {"serverName": "taskhub-pg-r1"},
                "recovery": {"enabled": True, "targetTime": "2026-12-01T09:41:00Z"},
            }
        },
    )

    def test_cluster_recovers_from_the_old_folder_and_archives_to_a_new_one(self) -> None:
        found = objects(self.VALUES)
        spec = app_cluster(found)["spec"]
        recovery = spec["bootstrap"]["recovery"]
        assert "initdb" not in spec["bootstrap"]
        assert recovery["recoveryTarget"] == {"targetTime": "2026-12-01T09:41:00Z"}
        assert recovery["database"] == "taskhub"
        assert recovery["owner"] == "taskhub"
        (source,) = spec["externalClusters"]
        assert source["name"] == recovery["source"]
        assert source["barmanObjectStore"]["serverName"] == "taskhub-pg"
        assert source["barmanObjectStore"]["destinationPath"] == BUCKET
        assert spec["backup"]["barmanObjectStore"]["serverName"] == "taskhub-pg-r1"
        assert all_errors(found) == []

    def test_recovery_needs_the_store_egress_even_without_backups(self) -> None:
        values = {
            "postgresql": {
                "backup": {"destinationPath": BUCKET, "existingSecret": "creds"},
                "recovery": {"enabled": True},
            }
        }
        found = objects(merged(values, TIGHT_API))
        spec = app_cluster(found)["spec"]
        assert "backup" not in spec
        assert "recoveryTarget" not in spec["bootstrap"]["recovery"]  # the whole archive
        assert egress_allows(found, PG_POD, PUBLIC_STORE, 443)
        assert [o for o in found if o["kind"] == "ScheduledBackup"] == []
        assert all_errors(found) == []

    def test_a_bad_target_time_is_refused(self) -> None:
        values = merged(self.VALUES, {"postgresql": {"recovery": {"targetTime": "yesterday"}}})
        with pytest.raises(helm.HelmValuesError, match="/postgresql/recovery/targetTime"):
            render(values)


def restore_objects() -> list[Manifest]:
    found: list[Manifest] = []
    for path in sorted(RESTORE_DIR.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


class TestRestoreManifests:
    """k8s/restore/: the runbook's point-in-time recovery into a new Cluster."""

    def test_every_object_validates(self) -> None:
        found = restore_objects()
        assert {o["kind"] for o in found} == {"Cluster", "NetworkPolicy"}
        assert all_errors(found) == []

    def test_recovery_cluster_is_new_and_reads_the_charts_backups(self) -> None:
        found = restore_objects()
        cluster = one(found, "Cluster")
        spec = cluster["spec"]
        assert cluster["metadata"]["name"] != "taskhub-pg"
        recovery = spec["bootstrap"]["recovery"]
        target_time = recovery["recoveryTarget"]["targetTime"]
        assert target_time.endswith("Z")
        (source,) = [e for e in spec["externalClusters"] if e["name"] == recovery["source"]]
        # The folder is the external cluster's name: the chart's Cluster.
        assert source["barmanObjectStore"].get("serverName", source["name"]) == "taskhub-pg"
        # The same bucket, credentials and database as the production profile.
        production = rendered_profile("production")
        chart_cluster = production.get("Cluster", "taskhub-pg")
        assert chart_cluster is not None
        chart_store = chart_cluster["spec"]["backup"]["barmanObjectStore"]
        store = source["barmanObjectStore"]
        assert store["destinationPath"] == chart_store["destinationPath"]
        assert store["s3Credentials"] == chart_store["s3Credentials"]
        assert recovery["database"] == production.values["postgresql"]["database"]
        assert recovery["owner"] == production.values["postgresql"]["owner"]
        assert spec["imageName"] == chart_cluster["spec"]["imageName"]
        # A verification copy never writes to the bucket.
        assert "backup" not in spec

    def test_policy_opens_the_recovery_pods_under_default_deny(self) -> None:
        found = restore_objects()
        cluster = one(found, "Cluster")
        policy = one(found, "NetworkPolicy")
        pod = {"cnpg.io/cluster": cluster["metadata"]["name"], "cnpg.io/podRole": "instance"}
        assert selector_matches(policy["spec"]["podSelector"], pod)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert egress_allows(found, pod, PUBLIC_STORE, 443)
        # The CNPG operator reaches the instance manager.
        operator_rules = [
            r
            for r in policy["spec"]["ingress"]
            for peer in r["from"]
            if peer.get("namespaceSelector", {}).get("matchLabels", {})
            == {"kubernetes.io/metadata.name": "cnpg-system"}
        ]
        assert [p["port"] for r in operator_rules for p in r["ports"]] == [8000]
