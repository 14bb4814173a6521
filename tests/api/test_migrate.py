"""`taskhub migrate` as the operator's Job runs it: real processes, each test on a fresh
database of its own; the advisory lock, the expand/contract phases, a database ahead
of the code, and the failures that must end in one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from taskhub_api.schema import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS_DIR_ENV,
    SchemaVersion,
    migrations_dir,
)
from tests.conftest import ROOT, pg_url
from tests.support.net import CLOSED_PORT

TASKHUB = Path(sys.executable).with_name("taskhub")
ALEMBIC = Path(sys.executable).with_name("alembic")


def _head() -> str:
    head = SchemaVersion().head
    assert head is not None
    return head


HEAD = _head()  # of api/migrations
# Revisions the tests add on top of it, and one no release has.
EXPAND, CONTRACT, NEWER = "t_expand", "t_contract", "t_from_a_newer_release"
# How pg_locks shows the bigint key: high and low 32 bits.
LOCK_CLASSID, LOCK_OBJID = (MIGRATION_LOCK_KEY >> 32) & 0xFFFFFFFF, MIGRATION_LOCK_KEY & 0xFFFFFFFF


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Replaces tests/api's: these tests use databases of their own, not the app's."""


@dataclass
class Database:
    url: str  # for taskhub (SQLAlchemy)
    dsn: str  # for asyncpg

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    async def revision(self) -> str | None:
        if not (await self.fetch("SELECT to_regclass('alembic_version') IS NOT NULL"))[0][0]:
            return None
        rows = await self.fetch("SELECT version_num FROM alembic_version")
        return str(rows[0]["version_num"]) if rows else None

    async def schema(self) -> list[tuple[str, str, str]]:
        rows = await self.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        return [tuple(row) for row in rows]

    async def lock_waiters(self) -> int:
        rows = await self.fetch(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_CLASSID,
            LOCK_OBJID,
        )
        return int(rows[0][0])


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_url("postgres", "postgresql"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    name = f"taskhub_migrate_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield Database(pg_url(name), pg_url(name, "postgresql"))
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_revision(scripts: Path, rev: str, down: str, upgrade: str, phase: str = "") -> None:
    body = f"""\
        revision = {rev!r}
        down_revision = {down!r}
        branch_labels = None
        depends_on = None
        {f"phase = {phase!r}" if phase else ""}
        from alembic import op


        def upgrade() -> None:
            op.execute({upgrade!r})


        def downgrade() -> None:
            pass
        """
    (scripts / "versions" / f"2099_01_01_{rev}_test.py").write_text(textwrap.dedent(body))


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A copy of api/migrations (no revisions added yet)."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture
def phased(scripts: Path) -> Path:
    """This release's revisions plus an expand one and the contract one that follows it."""
    add_revision(scripts, EXPAND, HEAD, "CREATE TABLE probe (id int, legacy text)")
    add_revision(scripts, CONTRACT, EXPAND, "ALTER TABLE probe DROP COLUMN legacy", "contract")
    return scripts


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _env(url: str, scripts: Path | None) -> dict[str, str]:
    return {
        **os.environ,
        "TASKHUB_DB__URL": url,
        MIGRATIONS_DIR_ENV: str(scripts or migrations_dir()),
        "TASKHUB_LOG_JSON": "false",
        "TASKHUB_LOG_LEVEL": "INFO",
    }


async def start(
    url: str, *args: str, scripts: Path | None = None, command: Path = TASKHUB
) -> asyncio.subprocess.Process:
    argv = [str(command), *(args or ["migrate"])]
    return await asyncio.create_subprocess_exec(
        *argv,
        env=_env(url, scripts),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> Run:
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def migrate(url: str, *args: str, scripts: Path | None = None) -> Run:
    return await finish(await start(url, "migrate", *args, scripts=scripts))


def assert_one_line_error(run: Run, *fragments: str) -> None:
    assert run.returncode != 0, run
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    for fragment in fragments:
        assert fragment in run.stderr, run.stderr


async def wait_for_waiters(db: Database, count: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (waiting := await db.lock_waiters()) < count:
        assert time.monotonic() < deadline, f"{waiting} of {count} runs wait for the lock"
        await asyncio.sleep(0.05)


class TestMigrate:
    async def test_fresh_database_goes_to_head_once(self, db: Database) -> None:
        first = await migrate(db.url)
        assert first.returncode == 0, first.stderr
        assert f"schema upgraded from nothing to {HEAD}" in first.stdout
        assert await db.revision() == HEAD

        again = await migrate(db.url)
        assert again.returncode == 0, again.stderr
        assert f"schema already at {HEAD}: nothing to do" in again.stdout

    async def test_unreachable_database_is_one_line(self) -> None:
        run = await migrate(f"postgresql+asyncpg://postgres@127.0.0.1:{CLOSED_PORT}/taskhub")
        assert_one_line_error(run, "cannot reach the database")

    async def test_a_failing_revision_leaves_nothing_half_applied(
        self, db: Database, scripts: Path
    ) -> None:
        add_revision(scripts, "t_broken", HEAD, "SELEC 1")
        run = await migrate(db.url, scripts=scripts)
        assert_one_line_error(run, 'syntax error at or near "SELEC"')
        # This release's revisions ran in the same transaction, rolled back with it.
        assert await db.revision() is None
        assert await db.schema() == []

    async def test_a_branched_history_is_refused(self, db: Database, scripts: Path) -> None:
        add_revision(scripts, "t_one", HEAD, "CREATE TABLE probe_a ()")
        add_revision(scripts, "t_other", HEAD, "CREATE TABLE probe_b ()")
        run = await migrate(db.url, scripts=scripts)
        assert_one_line_error(run, "not linear at revision")
        assert await db.revision() is None


class TestLock:
    def test_the_key_is_the_documented_one(self) -> None:
        # docs/architecture.md gives these numbers to look for in pg_locks.
        assert MIGRATION_LOCK_KEY == -384280783880149324
        assert (LOCK_CLASSID, LOCK_OBJID) == (4205494953, 3201345204)

    async def test_concurrent_runs_wait_and_the_second_finds_nothing_to_do(
        self, db: Database
    ) -> None:
        holder = await asyncpg.connect(db.dsn)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            runs = [await start(db.url), await start(db.url)]
            await wait_for_waiters(db, 2)
            assert await db.revision() is None  # neither has done anything
            await transaction.rollback()
        finally:
            await holder.close()
        results = [await finish(run) for run in runs]

        for result in results:
            assert result.returncode == 0, result.stderr
            assert "another migration holds the lock" in result.stdout
        outcomes = sorted(
            line.split("taskhub.migrate ", 1)[1]
            for result in results
            for line in result.stdout.splitlines()
            if "taskhub.migrate schema" in line
        )
        assert outcomes == [
            f"schema already at {HEAD}: nothing to do",
            f"schema upgraded from nothing to {HEAD}",
        ]
        assert await db.revision() == HEAD

    async def test_plain_alembic_takes_the_same_lock(self, db: Database) -> None:
        holder = await asyncpg.connect(db.dsn)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            run = await start(db.url, "-x", f"url={db.url}", "upgrade", "head", command=ALEMBIC)
            await wait_for_waiters(db, 1)
            await transaction.rollback()
        finally:
            await holder.close()
        result = await finish(run)
        assert result.returncode == 0, result.stderr
        assert await db.revision() == HEAD


class TestPhases:
    async def test_expand_stops_before_the_contract_revision(
        self, db: Database, phased: Path
    ) -> None:
        expand = await migrate(db.url, "--phase", "expand", scripts=phased)
        assert expand.returncode == 0, expand.stderr
        assert f"schema upgraded from nothing to {EXPAND}" in expand.stdout
        assert f"1 from {CONTRACT} (contract) on wait for --phase contract" in expand.stdout
        assert await db.revision() == EXPAND
        assert ("probe", "legacy", "text") in await db.schema()

        again = await migrate(db.url, "--phase", "expand", scripts=phased)
        assert again.returncode == 0, again.stderr
        assert f"schema already at {EXPAND}: nothing to do" in again.stdout

        contract = await migrate(db.url, "--phase", "contract", scripts=phased)
        assert contract.returncode == 0, contract.stderr
        assert f"schema upgraded from {EXPAND} to {CONTRACT}" in contract.stdout
        assert await db.revision() == CONTRACT
        assert ("probe", "legacy", "text") not in await db.schema()

    async def test_plain_migrate_goes_through_contract_to_head(
        self, db: Database, phased: Path
    ) -> None:
        run = await migrate(db.url, scripts=phased)
        assert run.returncode == 0, run.stderr
        assert f"schema upgraded from nothing to {CONTRACT}" in run.stdout
        assert await db.revision() == CONTRACT


class TestSchemaVersion:
    def test_ready_at_head_at_the_expand_head_and_ahead(
        self, phased: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(MIGRATIONS_DIR_ENV, str(phased))
        versions = SchemaVersion()
        assert versions.head == CONTRACT
        assert versions.target(None, "expand") == EXPAND
        assert versions.target(HEAD, "expand") == EXPAND
        assert versions.target(EXPAND, "expand") == EXPAND
        assert versions.target(EXPAND, "contract") == CONTRACT
        assert versions.target(NEWER, "contract") == NEWER
        assert versions.satisfied_by({CONTRACT})
        assert versions.satisfied_by({EXPAND})  # only contract left
        assert versions.satisfied_by({NEWER})  # a newer release migrated first
        assert not versions.satisfied_by({HEAD})
        assert not versions.satisfied_by(set())

    def test_not_ready_while_an_expand_revision_is_left(
        self, scripts: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A contract revision before an expand one: expand stops before both, and this
        # code needs the second.
        add_revision(scripts, CONTRACT, HEAD, "SELECT 1", "contract")
        add_revision(scripts, EXPAND, CONTRACT, "SELECT 1")
        monkeypatch.setenv(MIGRATIONS_DIR_ENV, str(scripts))
        versions = SchemaVersion()
        assert versions.target(HEAD, "expand") == HEAD
        assert not versions.satisfied_by({HEAD})
        assert not versions.satisfied_by({CONTRACT})
        assert versions.satisfied_by({EXPAND})


class TestAheadOfTheCode:
    async def test_a_newer_schema_is_left_alone(self, db: Database) -> None:
        assert (await migrate(db.url)).returncode == 0
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("UPDATE alembic_version SET version_num = $1", NEWER)
        finally:
            await conn.close()
        before = await db.schema()

        for args in ((), ("--phase", "expand"), ("--phase", "contract")):
            run = await migrate(db.url, *args)
            assert run.returncode == 0, run.stderr
            assert f"schema at {NEWER} is ahead of this release (head {HEAD})" in run.stdout
        assert await db.revision() == NEWER
        assert await db.schema() == before
