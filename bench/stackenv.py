"""The whole-stack benchmark's stack (bench/stack.py): starting and stopping it, the
settings its TaskHub processes get, and what it is asked during a run (where an
event's journey stands, where reads went, what the cache did)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg

import proctree

ROOT = Path(__file__).resolve().parent.parent
DB = "taskhub_bench"
HOST = "127.0.0.1"
# Offsets from --port-base.
PORTS = ("api", "metrics", "primary", "replica", "pgbouncer", "redis", "broker", "mail", "hook")
STACK_DIR = ROOT / ".local" / "benchstack"
BROKER_DIR = ROOT / ".local" / "benchstack-rabbitmq"
HOOK_EVENTS = ["task.created", "task.assigned"]


def devstack_env(ports: dict[str, int]) -> dict[str, str]:
    return {
        **os.environ,
        "STACK_DIR": str(STACK_DIR),
        "STACK_DB": DB,
        "PRIMARY_PORT": str(ports["primary"]),
        "REPLICA_PORT": str(ports["replica"]),
        "PGBOUNCER_PORT": str(ports["pgbouncer"]),
        "REDIS_PORT": str(ports["redis"]),
        "STACK_PORT_SETTING": "--port-base of bench/stack.py",
    }


def devstack(ports: dict[str, int], *command: str) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "devstack.sh"), *command],
        env=devstack_env(ports),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"stack: devstack.sh {' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


def broker(action: str, port: int, *extra: str) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "rabbitmq-node.sh"), action, str(BROKER_DIR), str(port), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and action != "stop":
        sys.exit(f"stack: rabbitmq-node.sh {action} failed:\n{result.stderr}")
    return result.stdout


def service_pids(ports: dict[str, int]) -> dict[str, int]:
    """The roots of the services' process trees: each postmaster, PgBouncer, Redis and
    the broker's Erlang VM (its pid file)."""
    place = Path(devstack(ports, "where").strip())

    def first_line(path: Path) -> int:
        return int(path.read_text().split()[0])

    return {
        "primary": first_line(place / "primary" / "postmaster.pid"),
        "replica": first_line(place / "replica" / "postmaster.pid"),
        "pgbouncer": first_line(place / "run" / "pgbouncer.pid"),
        "redis": first_line(place / "run" / "redis.pid"),
        "broker": first_line(BROKER_DIR / "rabbitmq.pid"),
    }


def taskhub_env(p: dict[str, int], log_level: str = "WARNING") -> dict[str, str]:
    """The settings of every TaskHub process: ``make dev``'s (scripts/devstack.sh env,
    the loopback webhook networks), on this stack's ports."""
    unlimited = {"requests": 100_000_000, "per_seconds": 60}
    return {
        "TASKHUB_DB__URL": f"postgresql+asyncpg://postgres@{HOST}:{p['pgbouncer']}/{DB}",
        "TASKHUB_DB__REPLICA_URL": f"postgresql+asyncpg://postgres@{HOST}:{p['pgbouncer']}/{DB}_ro",
        # The relay LISTENs on the primary: PgBouncer never delivers a NOTIFY.
        "TASKHUB_DB__LISTEN_URL": f"postgresql+asyncpg://postgres@{HOST}:{p['primary']}/{DB}",
        # PgBouncer 1.18 in transaction mode: no prepared statements across transactions.
        "TASKHUB_DB__STATEMENT_CACHE_SIZE": "0",
        "TASKHUB_REDIS__URL": f"redis://{HOST}:{p['redis']}/0",
        "TASKHUB_BROKER__URL": f"amqp://guest:guest@{HOST}:{p['broker']}//",
        "TASKHUB_SMTP__PORT": str(p["mail"]),
        "TASKHUB_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8","::1/128"]',
        "TASKHUB_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        # Cache on, principal cache at its default; rate limits on, raised so that the
        # 16 users of the load (each well over 1,200 requests a minute) are not refused.
        "TASKHUB_CACHE__ENABLED": "true",
        "TASKHUB_RATELIMIT__ENABLED": "true",
        "TASKHUB_RATELIMIT__ROLES": json.dumps(
            dict.fromkeys(("admin", "user", "viewer"), unlimited)
        ),
        # As bench/run.py: a line per request or job would be measured too.
        "TASKHUB_LOG_LEVEL": log_level,
        "TASKHUB_LOG_JSON": "false",
    }


async def replica_caught_up(ports: dict[str, int], seconds: float = 600) -> None:
    primary = await asyncpg.connect(host=HOST, port=ports["primary"], user="postgres")
    replica = await asyncpg.connect(host=HOST, port=ports["replica"], user="postgres")
    try:
        target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            lag = await replica.fetchval(
                "SELECT pg_wal_lsn_diff($1, pg_last_wal_replay_lsn())", target
            )
            if lag <= 0:
                return
            await asyncio.sleep(0.5)
        sys.exit("stack: the replica did not catch up with the primary")
    finally:
        await primary.close()
        await replica.close()


@dataclass
class Journey:
    """Where the events of the run stand (cumulative since the run's start)."""

    events: int
    created: int  # tasks (a task.created event each)
    pending: int  # outbox rows not yet published
    expected_jobs: int
    done_jobs: int
    other_jobs: int  # running, failed (to be retried) or dead

    @property
    def drained(self) -> bool:
        return self.pending == 0 and self.other_jobs == 0 and self.done_jobs >= self.expected_jobs


JOURNEY_QUERY = (
    "SELECT (SELECT count(*) FROM event) AS events, "
    "(SELECT count(*) FROM event WHERE type = 'task.created') AS created, "
    "(SELECT count(*) FROM event WHERE type = 'task.assigned') AS mails, "
    "(SELECT count(*) FROM event WHERE type = ANY($1::text[])) AS hooked, "
    "(SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending, "
    "(SELECT count(*) FROM job_execution WHERE status = 'done') AS done, "
    "(SELECT count(*) FROM job_execution WHERE status <> 'done') AS other"
)


async def _journey(conn: asyncpg.Connection, webhooks: int) -> Journey:
    row = await conn.fetchrow(JOURNEY_QUERY, HOOK_EVENTS)
    # A mail per task.assigned, a delivery per webhook and subscribed event.
    expected = row["mails"] + webhooks * row["hooked"]
    return Journey(
        row["events"], row["created"], row["pending"], expected, row["done"], row["other"]
    )


async def journey(dsn: str, webhooks: int) -> Journey:
    conn = await asyncpg.connect(dsn)
    try:
        return await _journey(conn, webhooks)
    finally:
        await conn.close()


async def _wait_drained(
    dsn: str, webhooks: int, broker_port: int, seconds: float
) -> tuple[float, Journey, float]:
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)  # one connection: the primary forks no backend per poll
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        while True:
            state = await _journey(conn, webhooks)
            elapsed = time.monotonic() - started
            # Drained in the database; then the broker holds nothing either (the
            # duplicates of a batch the relay published again, see relay.py).
            if (state.drained and await queued(broker_port) == 0) or elapsed > seconds:
                # What the polling cost the primary (its backend's CPU), for the caller
                # to take out of the primary's figure.
                probe = proctree.snapshot({"probe": backend})["probe"]
                return elapsed, state, probe
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def wait_drained(
    dsn: str, webhooks: int, broker_port: int, seconds: float
) -> tuple[float, Journey, float]:
    """Seconds until every event is relayed and every job it caused is done (or
    ``seconds`` passed: see the state's ``drained``) and the broker's queues are
    empty, where the journey stands, and the
    CPU seconds that the polling cost the primary."""
    return asyncio.run(_wait_drained(dsn, webhooks, broker_port, seconds))


async def reset(dsn: str) -> None:
    """What an earlier run left: its events, jobs, deliveries and webhooks (the tasks
    are bench/run.py's delete_created_tasks)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE job_execution, webhook_attempt, webhook_delivery, webhook")
    finally:
        await conn.close()


async def db_stats(ports: dict[str, int]) -> dict[str, int]:
    """Transactions of the bench database on the primary and on the replica, from each
    server's pg_stat_database (a standby counts the reads it serves)."""
    stats = {}
    for node in ("primary", "replica"):
        conn = await asyncpg.connect(host=HOST, port=ports[node], user="postgres", database=DB)
        try:
            stats[node] = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", DB
            )
        finally:
            await conn.close()
    return stats


METRIC = re.compile(
    r"^(taskhub_cache_requests_total|taskhub_db_reads_total|taskhub_ratelimit_decisions_total)"
    r"\{([^}]*)\} ([0-9.e+]+)$",
    re.MULTILINE,
)


def api_metrics(port: int) -> dict[str, float]:
    """The API's counters that show the cache, the read routing and the rate limits:
    ``cache:hit``, ``reads:replica``, ``ratelimit:limited`` ... (all workers summed)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    short = {
        "taskhub_cache_requests_total": "cache",
        "taskhub_db_reads_total": "reads",
        "taskhub_ratelimit_decisions_total": "ratelimit",
    }
    found: dict[str, float] = {}
    for name, labels, value in METRIC.findall(text):
        label = labels.split('"')[-2]  # the last label's value (result, target, outcome)
        key = f"{short[name]}:{label}"
        found[key] = found.get(key, 0.0) + float(value)
    return found


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: round(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0)}


def wait_warm(url: str, seconds: float = 60) -> float:
    """Seconds until ``/health/ready`` answered 200 ten times in a row: every worker
    process has warmed its pools (an API process says ready once they are, see
    docs/data.md, "Start-up"), not only the first to answer."""
    started = time.monotonic()
    streak = 0
    while streak < 10:
        if time.monotonic() - started > seconds:
            sys.exit(f"stack: {url} was not ready within {seconds:.0f} s")
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=5) as response:  # noqa: S310
                streak = streak + 1 if response.status == 200 else 0
        except OSError:  # 503 (HTTPError) while warming, or not listening yet
            streak = 0
            time.sleep(0.2)
    return time.monotonic() - started


async def queued(port: int) -> int:
    """Messages ready in the job and dispatch queues (passive declares: one AMQP
    connection, nothing declared)."""
    import aio_pika

    connection = await aio_pika.connect(f"amqp://guest:guest@{HOST}:{port}/", timeout=10)
    try:
        channel = await connection.channel()
        total = 0
        for name in ("taskhub.dispatch", "notifications", "webhooks", "maintenance"):
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total
    finally:
        await connection.close()


def queue_depths(port: int) -> dict[str, dict[str, int]]:
    """Messages left in the broker's queues (those holding any): ready, and delivered
    to a consumer but not yet acknowledged."""
    out = broker(
        "ctl", port, "list_queues", "-q", "name", "messages_ready", "messages_unacknowledged"
    )
    depths = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts[1:]) and parts[1:] != ["0", "0"]:
            depths[parts[0]] = {"ready": int(parts[1]), "unacked": int(parts[2])}
    return depths
