"""Property-based fuzzing of the whole API from its OpenAPI schema (schemathesis):
whatever it sends, the server never answers 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI

from taskhub_api.db import Database
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings
from taskhub_api.users.repository import UserRepository
from tests.e2e.conftest import LiveServer

ST = Path(sys.executable).with_name("st")


async def _token(app: FastAPI, settings: Settings, username: str, roles: list[str]) -> str:
    db: Database = app.state.db
    async with db.transaction() as session:
        users = UserRepository(session)
        user = await users.get_by_username(username) or await users.create(
            username=username, email=f"{username}@example.com", password_hash="x", roles=roles
        )
    assert user is not None
    return issue_access_token(settings.auth, user.id, username, roles)


@pytest.mark.parametrize("role", ["admin", "user"])
async def test_no_server_errors(
    live_server: LiveServer, app: FastAPI, settings: Settings, role: str, tmp_path: Path
) -> None:
    token = await _token(app, settings, f"fuzz-{role}", [role])
    report = tmp_path / "st.log"
    result = subprocess.run(  # noqa: ASYNC221 - the server under test is another process
        [
            str(ST),
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "20261123",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,  # schemathesis keeps its example database in the working directory
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"schemathesis found failures:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}\n"
        f"server log:\n{live_server.log.read_text()[-4000:]}"
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary is not None, result.stdout[-2000:]
    generated, passed = map(int, summary.groups())
    assert generated == passed > 500, summary.group(0)
