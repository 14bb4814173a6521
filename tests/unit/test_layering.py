"""The project's import contracts hold on the code, and each of the taskhub_api contracts
breaks on the violation it is there for, in a small package tree written for the test
(a domain no contract names, so a new domain is covered from its first commit)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# A clean tree: two domains, each router -> service -> repository -> models, the second
# using the first one way only.
CLEAN = {
    "__init__.py": "",
    "tasks/__init__.py": "",
    "tasks/models.py": "",
    "tasks/repository.py": "from taskhub_api.tasks import models\n",
    "tasks/service.py": "from taskhub_api.tasks import repository\n",
    "tasks/router.py": "from taskhub_api.tasks import service\n",
    "tasks/history_router.py": "from taskhub_api.tasks import service\n",
    "tasks/history.py": "from taskhub_api.tasks import repository\n",
    "dispatch/__init__.py": "",
    "labels/__init__.py": "",
    "labels/models.py": "",
    "labels/repository.py": "from taskhub_api.labels import models\n",
    "labels/service.py": (
        "from taskhub_api.labels import repository\nfrom taskhub_api.tasks import service\n"
    ),
    "labels/router.py": "from taskhub_api.labels import service\nimport fastapi\n",
}


def _contracts() -> dict[str, dict[str, Any]]:
    """The project's contracts on taskhub_api's own structure, by what they hold (the
    others are about the worker and operator packages, checked on the real code below)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_role: dict[str, dict[str, Any]] = {}
    for contract in config["contracts"]:
        if contract["type"] in {"acyclic_siblings", "layers"}:
            by_role[contract["type"]] = contract
        elif contract.get("forbidden_modules") == ["taskhub_api.*.repository"]:
            by_role["router-repository"] = contract
        elif contract.get("forbidden_modules") == ["fastapi", "starlette"]:
            by_role["no-fastapi"] = contract
    assert set(by_role) == set(ROLES), by_role
    return by_role


ROLES = ("acyclic_siblings", "layers", "router-repository", "no-fastapi")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(value)


def _lint(tmp_path: Path, changes: dict[str, str]) -> dict[str, str]:
    """Writes the tree (CLEAN with ``changes``) and the contracts; each contract's
    verdict (KEPT or BROKEN) by name."""
    package = tmp_path / "taskhub_api"
    for name, source in {**CLEAN, **changes}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    lines = [
        '[tool.importlinter]\nroot_packages = ["taskhub_api"]\ninclude_external_packages = true\n'
    ]
    for contract in _contracts().values():
        lines.append("[[tool.importlinter.contracts]]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in contract.items())
        lines.append("")
    (tmp_path / "pyproject.toml").write_text("\n".join(lines))
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", "pyproject.toml"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    verdicts = {}
    for role, contract in _contracts().items():
        for line in done.stdout.splitlines():
            if line.startswith(contract["name"] + " "):
                verdicts[role] = line.rsplit(" ", 1)[-1]
    assert len(verdicts) == len(ROLES), done.stdout + done.stderr
    assert (done.returncode == 0) == (set(verdicts.values()) == {"KEPT"}), done.stdout
    return verdicts


class TestContracts:
    def test_the_project_keeps_every_contract(self) -> None:
        done = subprocess.run(
            [str(LINT_IMPORTS), "--no-cache"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert " BROKEN" not in done.stdout

    def test_a_clean_tree_keeps_them(self, tmp_path: Path) -> None:
        assert set(_lint(tmp_path, {}).values()) == {"KEPT"}

    @pytest.mark.parametrize(
        "changes",
        [
            # Two domains importing each other (at function level too).
            {"tasks/models.py": "def f():\n    from taskhub_api.labels import models\n"},
            # A cycle inside a domain, through a module outside the layers.
            {
                "labels/names.py": "from taskhub_api.labels import service\n",
                "labels/models.py": "from taskhub_api.labels import names\n",
            },
        ],
        ids=["between-packages", "inside-a-package"],
    )
    def test_a_cycle_breaks_the_acyclic_contract(
        self, tmp_path: Path, changes: dict[str, str]
    ) -> None:
        assert _lint(tmp_path, changes)["acyclic_siblings"] == "BROKEN"

    def test_a_lower_layer_importing_a_higher_one_breaks_the_layers(self, tmp_path: Path) -> None:
        verdicts = _lint(tmp_path, {"labels/models.py": "from taskhub_api.labels import service\n"})
        assert verdicts["layers"] == "BROKEN"

    def test_a_router_importing_a_repository_breaks_the_forbidden_contract(
        self, tmp_path: Path
    ) -> None:
        verdicts = _lint(
            tmp_path, {"labels/router.py": "from taskhub_api.labels import repository\n"}
        )
        assert verdicts["router-repository"] == "BROKEN"
        assert {verdicts[role] for role in ROLES if role != "router-repository"} == {"KEPT"}

    @pytest.mark.parametrize("module", ["labels/service.py", "labels/repository.py"])
    def test_fastapi_in_a_service_or_repository_breaks_the_no_fastapi_contract(
        self, tmp_path: Path, module: str
    ) -> None:
        source = CLEAN[module] + "from fastapi import Depends\n"
        assert _lint(tmp_path, {module: source})["no-fastapi"] == "BROKEN"
