"""Where the Alembic scripts live, which revision a phase of `taskhub migrate` goes to,
and whether a database is at a revision this code can run on."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.script import Script
    from sqlalchemy.engine import Connection

_PACKAGE = Path(__file__).resolve().parent
# A source checkout has api/migrations; the wheel ships them inside the package.
_CANDIDATES = (_PACKAGE.parent / "migrations", _PACKAGE / "_migrations")
# Another script directory (a copy with extra revisions, in tests). The API and
# `taskhub migrate` both read it, so they always agree on which revisions exist.
MIGRATIONS_DIR_ENV = "TASKHUB_MIGRATIONS_DIR"

Phase = Literal["expand", "contract"]
PHASES: tuple[Phase, ...] = ("expand", "contract")

# The key of the PostgreSQL advisory lock every migration run holds: the first 8 bytes
# of sha256("taskhub.migrate") as a signed bigint, -384280783880149324
# (in pg_locks: classid 4205494953, objid 3201345204, objsubid 1).
MIGRATION_LOCK_NAME = "taskhub.migrate"
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(MIGRATION_LOCK_NAME.encode()).digest()[:8], "big", signed=True
)

log = logging.getLogger("taskhub.migrate")


class MigrationHistoryError(Exception):
    """The revision files themselves are wrong (a branch, an unknown phase)."""


def migrations_dir() -> Path:
    override = os.environ.get(MIGRATIONS_DIR_ENV)
    candidates = (Path(override),) if override else _CANDIDATES
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"Alembic migrations not found in {', '.join(map(str, candidates))}")


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url:
        config.cmd_opts = None
        config.attributes["url"] = url
    return config


def migration_engine(url: str) -> AsyncEngine:
    # Migrations may run through PgBouncer in transaction mode: no statement cache.
    return create_async_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
    )


def lock_migrations(connection: Connection) -> None:
    """Wait for the migration lock, held until the current transaction ends.

    A transaction-level lock, so it is correct behind PgBouncer in transaction mode
    (the transaction keeps its server connection, and the lock cannot outlive it on a
    pooled connection, as a session lock would) and is released by the server if the
    process dies. Whoever calls this reads the schema's revision only afterwards."""
    key = {"key": MIGRATION_LOCK_KEY}
    if connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar_one():
        return
    log.info("another migration holds the lock %s; waiting", MIGRATION_LOCK_NAME)
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)


class SchemaVersion:
    """The revision chain of this code: linear, each revision `expand` (the default) or
    `contract` (module-level ``phase = "contract"``: it drops or tightens what the
    previous release still uses, so it runs only once no old code is left)."""

    def __init__(self) -> None:
        self.script = ScriptDirectory(str(migrations_dir()))
        newest_first = list(self.script.walk_revisions())
        for rev in newest_first:
            if rev.is_branch_point or rev.is_merge_point or rev.dependencies:
                raise MigrationHistoryError(
                    f"the migration history is not linear at revision {rev.revision} "
                    f"({rev.path}); rebase it onto {self.script.get_heads()}"
                )
            phase = getattr(rev.module, "phase", "expand")
            if phase not in PHASES:
                raise MigrationHistoryError(
                    f"{rev.path}: phase must be 'expand' or 'contract', not {phase!r}"
                )
        self.chain: list[Script] = newest_first[::-1]
        self.head = self.chain[-1].revision if self.chain else None
        self.known = {rev.revision for rev in self.chain}

    @staticmethod
    def is_contract(rev: Script) -> bool:
        return getattr(rev.module, "phase", "expand") == "contract"

    def pending(self, current: str | None) -> list[Script]:
        """The revisions an upgrade to head applies, oldest first; none for a revision
        this code does not know (a newer release migrated ahead of us)."""
        if current is None:
            return self.chain
        if current not in self.known:
            return []
        return self.chain[[rev.revision for rev in self.chain].index(current) + 1 :]

    def target(self, current: str | None, phase: Phase) -> str | None:
        """The revision `taskhub migrate --phase <phase>` takes a database at `current`
        to: head for contract; for expand, the last one before the first pending
        contract revision. `current` itself when there is nothing to do."""
        reached = current
        for rev in self.pending(current):
            if phase == "expand" and self.is_contract(rev):
                break
            reached = rev.revision
        return reached

    def satisfied_by(self, current: set[str]) -> bool:
        """At our head, at our expand head (only contract revisions are left: they
        remove what this code no longer uses), or at a revision this code does not
        know: a newer release migrated ahead of us, and migrations are written
        expand-then-contract so the previous release keeps working during a rollout."""
        if not current:
            return False
        if not current & self.known:
            return True
        if len(current) > 1:
            return False
        return all(self.is_contract(rev) for rev in self.pending(next(iter(current))))
