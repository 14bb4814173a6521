"""Rendering helpers for the Helm chart tests.

The chart is rendered with Helm's own engine (helm-python-sdk), once per
values profile per session; every test reads the cached manifests. (A
uniquely named module rather than conftest.py, so that `import` never picks
another test package's conftest.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "taskhub"
CI_DIR = CHART_DIR / "ci"
DEV_VALUES = REPO_ROOT / "k8s" / "dev-values.yaml"
SHARED_DIR = REPO_ROOT.parent / "shared"
CRD_DIR = Path(os.environ.get("TASKHUB_CRD_DIR", SHARED_DIR / "crds"))
SCHEMA_DIR = Path(os.environ.get("TASKHUB_SCHEMA_DIR", SHARED_DIR / "schemas"))

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

    def pod_templates(self) -> list[tuple[Manifest, Manifest]]:
        """(workload, pod template) for every Deployment, StatefulSet and Job."""
        return [
            (o, o["spec"]["template"])
            for o in self.objects
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
        ]


def load_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    assert isinstance(loaded, dict), f"{path} must hold a mapping"
    return loaded


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Render the chart as `helm install` would (raises on schema/template errors)."""
    return chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


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
