"""Real access tokens and request fixtures for the wrk scripts.

Tokens are minted with ``issue_access_token`` and the key in ``TASKHUB_AUTH__SECRET_KEY``,
the key both servers are started with, for a spread of regular users (some own a few
hundred tasks, some thousands). The fixtures are written as a Lua table that
``bench/wrk/common.lua`` loads:

    TASKHUB_AUTH__SECRET_KEY=... .venv/bin/python bench/fixtures.py bench/results/fixtures.lua
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from common import CREATED_PREFIX, DB_DSN
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings

TOKEN_USERS = 16
IDS_PER_USER = 64
BODIES_PER_USER = 8
# Longer than the default 15 minutes so tokens outlive a long run.
TOKEN_TTL_SECONDS = 4 * 3600


def _lua(value: Any) -> str:
    """A Lua literal for strings, numbers, lists and string-keyed tables."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "{\n" + "".join(f"  {_lua(v)},\n" for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


async def _token_users(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Regular users spread over the range of task counts, smallest to largest."""
    users = await conn.fetch(
        'SELECT u.id, u.username, u.roles, count(t.id) AS tasks FROM "user" u '
        "JOIN task t ON t.owner_id = u.id "
        "WHERE u.roles = ARRAY['user'] AND NOT u.disabled GROUP BY u.id ORDER BY tasks, u.id"
    )
    step = len(users) / TOKEN_USERS
    return [users[int(i * step + step / 2)] for i in range(TOKEN_USERS)]


def _create_body(rng: random.Random, n: int, assignees: list[str]) -> bytes:
    body: dict[str, Any] = {
        "title": f"{CREATED_PREFIX} {n}: review rollout plan",
        "priority": rng.choice(("low", "medium", "high", "urgent")),
        "labels": rng.sample(["bench", "backend", "k8s", "perf"], rng.randint(0, 2)),
    }
    if n % 2:
        body["description"] = "Created by the create scenario of bench/run.py."
    if n % 3 == 0:
        due = datetime.now(UTC) + timedelta(days=rng.randint(1, 30))
        body["due_at"] = due.isoformat(timespec="seconds")
    if n % 2 == 0:
        # Half name an assignee: the API then checks that the user exists.
        body["assignee_id"] = rng.choice(assignees)
    return orjson.dumps(body)


Fixtures = dict[str, list[dict[str, str]]]


async def collect(settings: Settings) -> Fixtures:
    """Tokens and requests per scenario: list, get, create."""
    auth = settings.auth.model_copy(update={"access_token_ttl_seconds": TOKEN_TTL_SECONDS})
    rng = random.Random(7)
    conn = await asyncpg.connect(DB_DSN)
    try:
        users = await _token_users(conn)
        listing: list[dict[str, str]] = []
        getting: list[dict[str, str]] = []
        creating: list[dict[str, str]] = []
        assignees = [str(u["id"]) for u in users]
        for user in users:
            token = issue_access_token(auth, user["id"], user["username"], list(user["roles"]))
            listing.append({"path": "/api/v1/tasks?limit=20", "token": token})
            ids = await conn.fetch(
                "SELECT id FROM task WHERE (owner_id = $1 OR assignee_id = $1) "
                "AND deleted_at IS NULL AND title NOT LIKE $3 ORDER BY random() LIMIT $2",
                user["id"],
                IDS_PER_USER,
                CREATED_PREFIX + "%",
            )
            getting += [{"path": f"/api/v1/tasks/{r['id']}", "token": token} for r in ids]
            for _ in range(BODIES_PER_USER):
                body = _create_body(rng, len(creating), assignees).decode()
                creating.append({"path": "/api/v1/tasks", "token": token, "body": body})
    finally:
        await conn.close()
    # Interleave users, so consecutive requests come from different users.
    rng.shuffle(getting)
    return {"list": listing, "get": getting, "create": creating}


def build(out: Path) -> Fixtures:
    """Mints tokens with the settings of the environment, writes the fixtures to
    ``out`` as a Lua table and returns them."""
    fixtures = asyncio.run(collect(Settings()))
    lua = "return {\n" + "".join(f"{name} = {_lua(v)},\n" for name, v in fixtures.items()) + "}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(lua)
    return fixtures


def main() -> None:
    parser = argparse.ArgumentParser(description="Mint tokens and write the wrk fixtures.")
    parser.add_argument("out", type=Path)
    fixtures = build(parser.parse_args().out)
    print("fixtures:", {name: len(requests) for name, requests in fixtures.items()})


if __name__ == "__main__":
    main()
