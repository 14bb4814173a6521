"""Seed the benchmark database: 1,000 users and 1,000,000 tasks, loaded with COPY.

Creates and migrates a database of its own (``taskhub_bench``, never the dev one; or
the one named by ``BENCH_DB_NAME``), then loads everything in one transaction, so a
run that fails leaves nothing behind and the next run starts over. A database that is
seeded already is left alone; one seeded with other counts is refused without
``--reset``. Prints the time of each phase and the disk the data takes, and writes
both to ``bench/results/seed-<database>.json``.

    .venv/bin/python bench/seed.py            # seed unless seeded
    .venv/bin/python bench/seed.py --reset    # drop the database and seed anew
    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/seed.py --tasks 10000000 --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from argon2 import PasswordHasher

from common import (
    BIN,
    CREATED_PREFIX,
    DB_DSN,
    DB_NAME,
    DB_URL,
    PASSWORD,
    PG_HOST,
    PG_PORT,
    RESULTS,
    ROOT,
    TASKS,
    USERS,
    roles,
    username,
)

TASK_COLUMNS = (
    "id",
    "owner_id",
    "assignee_id",
    "title",
    "description",
    "status",
    "priority",
    "labels",
    "due_at",
    "version",
    "deleted_at",
    "created_at",
    "updated_at",
)
USER_COLUMNS = ("id", "username", "email", "password_hash", "roles", "created_at", "updated_at")
CHUNK = 100_000

VERBS = ("Fix", "Add", "Review", "Migrate", "Document", "Refactor", "Test", "Upgrade", "Remove")
THINGS = (
    "readiness probe",
    "helm chart values",
    "login page",
    "billing export",
    "webhook retries",
    "search index",
    "CI pipeline",
    "backup job",
    "rate limiter",
    "audit log",
    "dashboard",
    "ingress TLS",
    "user invitations",
    "API pagination",
    "dark mode",
)
PLACES = ("", " in staging", " for EU cluster", " before release", " (customer report)", " v2")
SENTENCE = (
    "the deployment fails when the pod restarts during a rolling update and the old "
    "replica keeps serving stale configuration so customers see errors after login "
    "we should add metrics alerts and a runbook entry then verify on staging first"
)
WORDS = SENTENCE.split()
LABELS = (
    "backend",
    "frontend",
    "bug",
    "feature",
    "k8s",
    "security",
    "perf",
    "docs",
    "infra",
    "ux",
    "billing",
    "api",
    "db",
    "ci",
    "customer",
    "tech-debt",
)
STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high", "urgent")
PRIORITY_WEIGHTS = (25, 45, 22, 8)


def _description(rng: random.Random) -> str:
    if rng.random() < 0.45:
        return ""
    start = rng.randrange(len(WORDS))
    size = rng.randint(8, 40)
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(size)).capitalize() + "."


def _labels(rng: random.Random) -> list[str]:
    count = rng.choices((0, 1, 2, 3), weights=(30, 35, 25, 10))[0]
    return rng.sample(LABELS, count)


def task_rows(
    rng: random.Random, user_ids: list[uuid.UUID], now: datetime, count: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Tasks in chunks. Owners are skewed (some users own several times the median),
    recent tasks are more frequent, old tasks are mostly done."""
    weights = [rng.lognormvariate(0, 0.6) for _ in user_ids]
    year = timedelta(days=365).total_seconds()
    made = 0
    while made < count:
        size = min(CHUNK, count - made)
        owners = rng.choices(user_ids, weights=weights, k=size)
        chunk = []
        for owner in owners:
            age = year * rng.random() ** 1.5  # growth: more tasks lately
            created = now - timedelta(seconds=age)
            updated = min(now, created + timedelta(seconds=rng.random() * age * 0.3))
            done_odds = min(0.85, 0.2 + age / year)
            roll = rng.random()
            status = "done" if roll < done_odds else ("in_progress" if roll < 0.9 else "todo")
            due = created + timedelta(days=rng.randint(1, 60)) if rng.random() < 0.6 else None
            chunk.append(
                (
                    uuid.uuid4(),
                    owner,
                    rng.choice(user_ids) if rng.random() < 0.6 else None,
                    f"{rng.choice(VERBS)} {rng.choice(THINGS)}{rng.choice(PLACES)}",
                    _description(rng),
                    status,
                    rng.choices(PRIORITIES, weights=PRIORITY_WEIGHTS)[0],
                    _labels(rng),
                    due,
                    rng.choices((1, 2, 3, 4, 5), weights=(50, 25, 12, 8, 5))[0],
                    updated if rng.random() < 0.02 else None,  # 2% soft-deleted
                    created,
                    updated,
                )
            )
        made += size
        yield chunk


def ensure_database() -> None:
    """PostgreSQL running, the bench database created and migrated."""
    env = {**os.environ, "PGHOST": PG_HOST, "PGPORT": PG_PORT, "TASKHUB_DB__URL": DB_URL}
    script = str(ROOT / "scripts" / "ensure-postgres.sh")
    subprocess.run([script, DB_NAME], check=True, env=env, timeout=600)
    subprocess.run([str(BIN / "taskhub"), "migrate"], check=True, env=env, cwd=ROOT, timeout=300)


async def drop_database() -> None:
    conn = await asyncpg.connect(DB_DSN.rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await conn.close()


async def seeded_counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """The bench users and the seeded tasks (not those a create run added)."""
    users = await conn.fetchval("SELECT count(*) FROM \"user\" WHERE username LIKE 'bench-user-%'")
    tasks = await conn.fetchval(
        "SELECT count(*) FROM task WHERE title NOT LIKE $1", CREATED_PREFIX + "%"
    )
    return int(users), int(tasks)


async def is_seeded(conn: asyncpg.Connection, users: int = USERS, tasks: int = TASKS) -> bool:
    return await seeded_counts(conn) == (users, tasks)


async def _load(
    conn: asyncpg.Connection, rng: random.Random, users: int, tasks: int
) -> dict[str, float]:
    """Loads the users and tasks; returns the seconds of the COPY and of the index and
    foreign-key builds."""
    now = datetime.now(UTC)
    password_hash = PasswordHasher().hash(PASSWORD)
    user_ids = [uuid.uuid4() for _ in range(users)]
    user_rows = [
        (
            user_id,
            username(i),
            f"{username(i)}@bench.taskhub.local",
            password_hash,
            roles(i, users),
            now - timedelta(days=400) + timedelta(minutes=i),
            now - timedelta(days=400) + timedelta(minutes=i),
        )
        for i, user_id in enumerate(user_ids)
    ]
    await conn.copy_records_to_table("user", records=user_rows, columns=USER_COLUMNS)
    # Secondary indexes and foreign keys are built and checked once after the load
    # rather than row by row (several times faster). Their definitions come from the
    # migrated schema, so the result is the same schema.
    indexes = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl "
        "FROM pg_index i WHERE i.indrelid = 'task'::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
    )
    foreign_keys = await conn.fetch(
        "SELECT conname AS name, pg_get_constraintdef(oid) AS ddl FROM pg_constraint "
        "WHERE conrelid = 'task'::regclass AND contype = 'f'"
    )
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    for fk in foreign_keys:
        await conn.execute(f"ALTER TABLE task DROP CONSTRAINT {fk['name']}")
    started = time.perf_counter()
    chunks = task_rows(rng, user_ids, now, tasks)
    # The next chunk is generated in a thread while PostgreSQL ingests this one.
    pending = asyncio.create_task(asyncio.to_thread(next, chunks, None))
    copied = 0
    while (chunk := await pending) is not None:
        pending = asyncio.create_task(asyncio.to_thread(next, chunks, None))
        await conn.copy_records_to_table("task", records=chunk, columns=TASK_COLUMNS)
        copied += len(chunk)
        elapsed = time.perf_counter() - started
        print(f"  copied {copied:>10,} tasks ({elapsed:6.1f} s)", flush=True)
    timings = {"copy_s": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    for index in indexes:
        step = time.perf_counter()
        await conn.execute(index["ddl"])
        print(f"  index {index['name']} ({time.perf_counter() - step:.1f} s)", flush=True)
    for fk in foreign_keys:
        step = time.perf_counter()
        await conn.execute(f"ALTER TABLE task ADD CONSTRAINT {fk['name']} {fk['ddl']}")
        print(f"  foreign key {fk['name']} ({time.perf_counter() - step:.1f} s)", flush=True)
    timings["indexes_and_foreign_keys_s"] = round(time.perf_counter() - started, 1)
    print(
        f"  built {len(indexes)} indexes and {len(foreign_keys)} foreign keys "
        f"({timings['indexes_and_foreign_keys_s']:.1f} s)"
    )
    return timings


async def disk_usage(conn: asyncpg.Connection) -> dict[str, int]:
    """Bytes: the database, the task table with its indexes and TOAST, its heap, and
    each of its indexes."""
    sizes = {
        "database": await conn.fetchval("SELECT pg_database_size(current_database())"),
        "task_total": await conn.fetchval("SELECT pg_total_relation_size('task')"),
        "task_heap": await conn.fetchval("SELECT pg_relation_size('task')"),
    }
    for row in await conn.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes "
        "FROM pg_index WHERE indrelid = 'task'::regclass ORDER BY 2 DESC"
    ):
        sizes[row["name"]] = row["bytes"]
    return sizes


async def seed(reset: bool = False, users: int = USERS, tasks: int = TASKS) -> None:
    started = time.perf_counter()
    if reset:
        await drop_database()
    ensure_database()
    conn = await asyncpg.connect(DB_DSN)
    try:
        held = await seeded_counts(conn)
        if held == (users, tasks):
            print(f"seed: {DB_NAME} already holds {users:,} users and {tasks:,} tasks")
            return
        if held[0]:
            # Another size of seed: reloading it would take its owner's data set away.
            raise SystemExit(
                f"seed: {DB_NAME} holds {held[0]:,} users and {held[1]:,} tasks, not "
                f"{users:,} and {tasks:,}; --reset to seed it anew"
            )
        print(f"seed: loading {users:,} users and {tasks:,} tasks into {DB_NAME}", flush=True)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET synchronous_commit = off")
        async with conn.transaction():
            await conn.execute('TRUNCATE "user", task CASCADE')
            timings = await _load(conn, random.Random(20261123), users, tasks)
        step = time.perf_counter()
        await conn.execute('VACUUM (ANALYZE) "user", task')
        timings["vacuum_analyze_s"] = round(time.perf_counter() - step, 1)
        timings["total_s"] = round(time.perf_counter() - started, 1)
        print(f"  vacuum analyze ({timings['vacuum_analyze_s']:.1f} s)")
        sizes = await disk_usage(conn)
        for name, size in sizes.items():
            print(f"  {name:<28} {size / 2**20:9,.0f} MiB")
        RESULTS.mkdir(parents=True, exist_ok=True)
        report = {"database": DB_NAME, "users": users, "tasks": tasks, **timings, "bytes": sizes}
        (RESULTS / f"seed-{DB_NAME}.json").write_text(json.dumps(report, indent=2))
        print(f"seed: done in {timings['total_s']:.1f} s")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reset", action="store_true", help="drop the database first")
    parser.add_argument("--users", type=int, default=USERS, help=f"default {USERS:,}")
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"default {TASKS:,}")
    args = parser.parse_args()
    if args.users < 1 or args.tasks < 1:
        parser.error("--users and --tasks must be positive")
    asyncio.run(seed(args.reset, args.users, args.tasks))


if __name__ == "__main__":
    main()
