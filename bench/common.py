"""What the benchmark scripts share: paths, the bench database and the user names."""

from __future__ import annotations

import os
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
