"""Rendering helpers for the Helm chart tests.

The chart is rendered with Helm's own engine (helm-python-sdk), once per
values profile per session; every test reads the cached manifests. (A
uniquely named module rather than conftest.py, so that `import` never picks
another test package's conftest.)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import celpy
import helm_python as helm
import jsonschema
import yaml
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "taskhub"
TASKHUB_CRD = CHART_DIR / "crds" / "taskhubs.taskhub.io.yaml"
CI_DIR = CHART_DIR / "ci"
DEV_VALUES = REPO_ROOT / "k8s" / "dev-values.yaml"
SHARED_DIR = REPO_ROOT.parent / "shared"
CRD_DIR = Path(os.environ.get("TASKHUB_CRD_DIR", SHARED_DIR / "crds"))
SCHEMA_DIR = Path(os.environ.get("TASKHUB_SCHEMA_DIR", SHARED_DIR / "schemas"))
for _name, _folder in (("TASKHUB_CRD_DIR", CRD_DIR), ("TASKHUB_SCHEMA_DIR", SCHEMA_DIR)):
    if not _folder.is_dir():
        raise RuntimeError(
            f"{_folder} does not exist: the chart tests validate against the shared CRDs "
            f"and schemas, kept in ../shared next to the checkout; set {_name} to where "
            "they are"
        )

RELEASE = "taskhub"
NAMESPACE = "taskhub"

# Every ci/*-values.yaml profile, the chart defaults, and skaffold's dev values.
PROFILES: dict[str, Path | None] = {
    "defaults": None,
    **{p.name.removesuffix("-values.yaml"): p for p in sorted(CI_DIR.glob("*-values.yaml"))},
    "dev": DEV_VALUES,
}

Manifest = dict[str, Any]


@dataclass
class Rendered:
    """One rendered profile: its values and its Kubernetes objects."""

    profile: str
    values: dict[str, Any]
    objects: list[Manifest]
    notes: str
    sources: dict[int, str] = field(default_factory=dict)

    def of_kind(self, *kinds: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] in kinds]

    def get(self, kind: str, name: str) -> Manifest | None:
        return next(
            (o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name),
            None,
        )

    @property
    def operator_mode(self) -> bool:
        return bool(self.values["operator"]["enabled"])

    def taskhub(self) -> Manifest | None:
        found = self.of_kind("TaskHub")
        assert len(found) <= 1
        return found[0] if found else None

    def pod_templates(self) -> list[tuple[Manifest, Manifest]]:
        """(workload, pod template) for every Deployment, StatefulSet and Job, a
        bare Pod (the `helm test` hook) as its own template, and the TaskHub's
        migration pod template (the operator's Jobs run it)."""
        found: list[tuple[Manifest, Manifest]] = []
        for o in self.objects:
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                found.append((o, o["spec"]["template"]))
            elif o["kind"] == "Pod":
                found.append((o, o))
            elif o["kind"] == "TaskHub" and "template" in o["spec"].get("migrations", {}):
                found.append((o, o["spec"]["migrations"]["template"]))
        return found

    def managed_deployments(self) -> set[str]:
        """Deployments whose image the operator sets (empty with the operator off)."""
        taskhub = self.taskhub()
        if taskhub is None:
            return set()
        spec = taskhub["spec"]
        return {d["name"] for d in spec.get("deployments", [])} | {
            w["deployment"] for w in spec.get("workers", [])
        }


def load_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    assert isinstance(loaded, dict), f"{path} must hold a mapping"
    return loaded


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render(
    values: dict[str, Any], *, name: str = RELEASE, revision: int = 1, upgrade: bool = False
) -> dict[str, str]:
    """Render the chart as `helm install` (or `helm upgrade` to `revision`) would;
    raises on schema and template errors."""
    return chart().render(
        values,
        name=name,
        namespace=NAMESPACE,
        revision=revision,
        is_install=not upgrade,
        is_upgrade=upgrade,
    )


def parse(manifests: dict[str, str]) -> tuple[list[Manifest], dict[int, str]]:
    objects: list[Manifest] = []
    sources: dict[int, str] = {}
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                sources[len(objects)] = template
                objects.append(doc)
    return objects, sources


@cache
def rendered_profile(profile: str) -> Rendered:
    values = load_values(PROFILES[profile])
    manifests = render(values)
    objects, sources = parse(manifests)
    notes = next((t for k, t in manifests.items() if k.endswith("NOTES.txt")), "")
    return Rendered(profile, chart().merge_values(values), objects, notes, sources)


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- Custom resources as the API server sees them ---------------------------


def forbid_unknown_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """Close every object schema that Kubernetes would prune, so that unknown
    fields are errors (as with fieldValidation=Strict)."""
    schema = copy.deepcopy(schema)
    # The API server always accepts these at the root, listed or not.
    implicit = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    schema["properties"] = {**implicit, **schema.get("properties", {})}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def field_path(path: str) -> str:
    """A field path as the API server words it: spec.workers[0].minReplicas."""
    return path.removeprefix(".") or "<root>"


def _children(schema: dict[str, Any], value: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """(path suffix, child schema, child value) of the values present."""
    if isinstance(value, dict):
        found = [
            (f".{key}", sub, value[key])
            for key, sub in schema.get("properties", {}).items()
            if key in value
        ]
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = schema.get("properties", {})
            found += [(f".{k}", extra, v) for k, v in value.items() if k not in known]
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [(f"[{i}]", schema["items"], item) for i, item in enumerate(value)]
    return []


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural-schema defaulting, which the API server does before it
    validates: a missing property with a default gets it, then is defaulted
    in turn."""
    value = copy.deepcopy(value)

    def walk(node_schema: dict[str, Any], node: Any) -> None:
        if isinstance(node, dict):
            for key, sub in node_schema.get("properties", {}).items():
                if key not in node and "default" in sub:
                    node[key] = copy.deepcopy(sub["default"])
        for _, sub, child in _children(node_schema, node):
            walk(sub, child)

    walk(schema, value)
    return value


def cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every x-kubernetes-validations rule evaluated on the value it sits on,
    with `self` bound to it; a false rule reports the CRD's message."""
    errors: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": json_to_cel(value)})
        except CELEvalError as exc:
            errors.append(f"{field_path(path)}: rule {rule['rule']!r} failed to evaluate: {exc}")
            continue
        if not isinstance(ok, BoolType) or not ok:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            errors.append(f"{field_path(path)}: {message}")
    for suffix, sub, child in _children(schema, value):
        errors += cel_errors(sub, child, path + suffix)
    return errors


def list_type_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """x-kubernetes-list-type map/set: duplicated keys are invalid."""
    errors: list[str] = []
    if isinstance(value, list):
        kind = schema.get("x-kubernetes-list-type")
        keys: list[str] = []
        if kind == "map":
            names = schema["x-kubernetes-list-map-keys"]
            keys = [yaml.safe_dump([i.get(k) for k in names]) for i in value]
        elif kind == "set":
            keys = [yaml.safe_dump(i) for i in value]
        if len(keys) != len(set(keys)):
            errors.append(f"{field_path(path)}: duplicate entries in a list of type {kind}")
    for suffix, sub, child in _children(schema, value):
        errors += list_type_errors(sub, child, path + suffix)
    return errors


@cache
def taskhub_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TASKHUB_CRD.read_text())
    return loaded


def taskhub_schema(version: str = "v1alpha1") -> dict[str, Any]:
    (served,) = [v for v in taskhub_crd()["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def taskhub_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse in a TaskHub (strict field validation):
    defaults first, then the OpenAPI schema, list types and every CEL rule."""
    group, version = obj["apiVersion"].split("/")
    crd = taskhub_crd()
    assert group == crd["spec"]["group"]
    assert obj["kind"] == crd["spec"]["names"]["kind"]
    schema = taskhub_schema(version)
    defaulted = apply_defaults(schema, obj)
    validator = jsonschema.Draft4Validator(forbid_unknown_fields(schema))
    errors = [
        f"{field_path(''.join(f'[{k}]' if isinstance(k, int) else f'.{k}' for k in e.path))}: "
        f"{e.message}"
        for e in validator.iter_errors(defaulted)
    ]
    return errors + list_type_errors(schema, defaulted) + cel_errors(schema, defaulted)


def operator_migration_job(
    rendered: Rendered, phase: Literal["expand", "contract"] = "expand"
) -> Manifest:
    """The migration Job the operator creates from the rendered TaskHub: its
    own builder (taskhub_operator.jobs) on the spec as the API server stores it
    (defaulted). Imported here so that only the tests that need it depend on
    the operator package."""
    from taskhub_operator.jobs import migration_job

    taskhub = rendered.taskhub()
    assert taskhub is not None, f"profile {rendered.profile} renders no TaskHub"
    stored = apply_defaults(taskhub_schema(), taskhub)
    job: Manifest = migration_job(
        taskhub=stored["metadata"]["name"],
        namespace=NAMESPACE,
        spec=stored["spec"],
        phase=phase,
    )
    return job


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    """Values overlays deep-merged, later ones winning (as Helm merges values files)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out
