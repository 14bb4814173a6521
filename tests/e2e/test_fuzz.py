"""Property-based fuzzing of the whole API from its OpenAPI schema (schemathesis), for
every role: whatever it sends, the server never answers 5xx, and every response
conforms to the document (its status, content type, headers and body), as a client
generated from the document expects."""

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
# Every check but one: a schema-valid request may still be refused (400, 422) for rules
# no JSON Schema states: text must be visible, a cursor must be one the API issued, a
# webhook URL must resolve to an allowed network, roles must not repeat.
EXCLUDED_CHECKS = "positive_data_acceptance"


async def _token(app: FastAPI, settings: Settings, username: str, roles: list[str]) -> str:
    db: Database = app.state.db
    async with db.transaction() as session:
        users = UserRepository(session)
        user = await users.get_by_username(username) or await users.create(
            username=username, email=f"{username}@example.com", password_hash="x", roles=roles
        )
    assert user is not None
    return issue_access_token(settings.auth, user.id, username, roles)


@pytest.mark.parametrize("role", ["admin", "user", "viewer", "anonymous"])
async def test_responses_conform_to_the_schema(
    live_server: LiveServer, app: FastAPI, settings: Settings, role: str, tmp_path: Path
) -> None:
    auth = []
    if role != "anonymous":
        token = await _token(app, settings, f"fuzz-{role}", [role])
        auth = ["--header", f"Authorization: Bearer {token}"]
    report = tmp_path / "st.log"
    result = subprocess.run(  # noqa: ASYNC221 - the server under test is another process
        [
            str(ST),
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            EXCLUDED_CHECKS,
            "--max-examples",
            "20",
            "--seed",
            "20261123",
            "--request-timeout",
            "10",
            *auth,
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
        f"schemathesis found failures (full report: {report}):\n{result.stdout[-6000:]}\n"
        f"{result.stderr[-2000:]}\nserver log:\n{live_server.log.read_text()[-4000:]}"
    )
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", result.stdout)
    assert operations is not None, result.stdout[-2000:]
    selected, total, tested = map(int, operations.groups())
    assert selected == total == tested, operations.group(0)  # every operation
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary is not None, result.stdout[-2000:]
    generated, passed = map(int, summary.groups())
    assert generated == passed > 300, summary.group(0)
