"""What the benchmark scripts share: paths, the bench database and the user names."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
WRK_SCRIPTS = ROOT / "bench" / "wrk"

DB_NAME = os.environ.get("BENCH_DB_NAME", "taskhub_bench")
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
# SQLAlchemy's URL (the app, `taskhub migrate`) and asyncpg's DSN (seed, reference).
DB_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{DB_NAME}"
DB_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{DB_NAME}"

USERS = 1_000
TASKS = 1_000_000
# Every bench user has this password (one argon2 hash, computed once).
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway benchmark database
# Title prefix of the tasks that the create scenario adds; run.py deletes them.
CREATED_PREFIX = "wrk-created"


def username(index: int) -> str:
    return f"bench-user-{index:04d}"


def roles(index: int, users: int = USERS) -> list[str]:
    """Most users are regular users; a few viewers and admins, as in a real team: the
    last 0.5 % are admins, the 1 % before them viewers (5 and 10 of 1,000 users)."""
    admins = max(1, users * 5 // 1000)
    viewers = max(1, users // 100)
    if index >= users - admins:
        return ["admin"]
    if index >= users - admins - viewers:
        return ["viewer"]
    return ["user"]


def api_environment(
    pool_size: int | None = None, max_overflow: int | None = None, redis_url: str | None = None
) -> dict[str, str]:
    """The settings every benchmark gives the API (and the reference): the bench
    database, a fresh signing key (also used to mint the load's tokens), quiet logs, and
    the database path measured as such: no Redis cache in front of it (the reference has
    none), no rate limit (a user's bucket would answer 429), and the principal's row read
    on every request (as the reference does). A benchmark that measures the cache turns
    it on over these."""
    env = {
        "TASKHUB_DB__URL": DB_URL,
        "TASKHUB_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "TASKHUB_LOG_LEVEL": "WARNING",
        "TASKHUB_LOG_JSON": "false",
        "TASKHUB_CACHE__ENABLED": "false",
        "TASKHUB_RATELIMIT__ENABLED": "false",
        "TASKHUB_AUTH__PRINCIPAL_CACHE_SECONDS": "0",
        "TASKHUB_REDIS__KEY_PREFIX": "taskhub-bench:",
    }
    if pool_size is not None:
        env["TASKHUB_DB__POOL_SIZE"] = str(pool_size)
    if max_overflow is not None:
        env["TASKHUB_DB__MAX_OVERFLOW"] = str(max_overflow)
    if redis_url is not None:
        # Writes retire cache entries in it even with the cache off.
        env["TASKHUB_REDIS__URL"] = redis_url
    return env
