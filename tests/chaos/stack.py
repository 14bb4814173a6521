"""The chaos run's own data stack and broker: scripts/devstack.sh on ports of its own
(never `make dev`'s or the tests'), and the project's RabbitMQ node
(scripts/rabbitmq-node.sh) with its management API, all under .local/."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "scripts" / "devstack.sh"
NODE_SCRIPT = ROOT / "scripts" / "rabbitmq-node.sh"
TASKHUB = ROOT / ".venv" / "bin" / "taskhub"
HOST = "127.0.0.1"
DB = "taskhub"
PRIMARY_PORT = 55462
REPLICA_PORT = 55463
PGBOUNCER_PORT = 56462
REDIS_PORT = 56409
# The node's Erlang distribution listens on port + 20000 (rabbitmq-node.sh).
RABBITMQ_PORT = 5692
MANAGEMENT_PORT = 15692
ADMIN_USERNAME = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen there (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def run(args: list[str], env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class ChaosStack:
    directory: Path = ROOT / ".local"
    admin_password: str = field(default_factory=lambda: f"Chaos-{secrets.token_urlsafe(12)}-7")
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    smtp_port: int = 0
    api_port: int = field(default_factory=free_port)

    @property
    def stack_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STACK_DIR": str(self.directory / "chaosstack"),
            "STACK_DB": DB,
            "PRIMARY_PORT": str(PRIMARY_PORT),
            "REPLICA_PORT": str(REPLICA_PORT),
            "PGBOUNCER_PORT": str(PGBOUNCER_PORT),
            "REDIS_PORT": str(REDIS_PORT),
        }

    @property
    def rabbit_dir(self) -> Path:
        return self.directory / "chaos-rabbitmq"

    @property
    def broker_url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{RABBITMQ_PORT}//"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    # Data stack

    def devstack(self, *args: str, timeout: float = 180) -> str:
        return run([str(DEVSTACK), *args], self.stack_env, timeout)

    def urls(self) -> dict[str, str]:
        """The TASKHUB_* variables of `scripts/devstack.sh env`."""
        values = {}
        for line in self.devstack("env").splitlines():
            line = line.removeprefix("export ").strip()
            if "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip("'\"")
        return values

    def dsn(self) -> str:
        """asyncpg DSN of the primary database (through PgBouncer, as the processes)."""
        return self.urls()["TASKHUB_DB__URL"].replace("postgresql+asyncpg://", "postgresql://")

    def replica_pids(self) -> list[int]:
        """The replica's postmaster and walreceiver."""
        query = (
            "SELECT current_setting('data_directory') || ' ' || "
            "coalesce((SELECT pid::text FROM pg_stat_wal_receiver), '')"
        )
        out = run(
            ["psql", "-h", HOST, "-p", str(REPLICA_PORT), "-U", "postgres", "-qAtc", query, DB],
            dict(os.environ),
            15,
        ).split()
        pids = [int(Path(out[0], "postmaster.pid").read_text().split()[0])]
        return pids + [int(p) for p in out[1:]]

    # Broker

    def rabbit(self, action: str, timeout: float = 120) -> None:
        env = {**os.environ, "MANAGEMENT_PORT": str(MANAGEMENT_PORT)}
        run([str(NODE_SCRIPT), action, str(self.rabbit_dir), str(RABBITMQ_PORT)], env, timeout)

    def fresh_rabbit(self) -> None:
        """A new node: no queue or message of an earlier run."""
        self.rabbit("stop")
        shutil.rmtree(self.rabbit_dir, ignore_errors=True)
        for port in (RABBITMQ_PORT, RABBITMQ_PORT + 20000, MANAGEMENT_PORT):
            if not port_free(port):
                raise RuntimeError(f"port {port} is taken: the chaos broker needs it")
        self.rabbit("start")

    def queue_details(self) -> list[dict[str, Any]]:
        """The default vhost's queues: name, messages, ready, unacknowledged, consumers."""
        columns = "name,messages,messages_ready,messages_unacknowledged,consumers"
        request = urllib.request.Request(
            f"http://{HOST}:{MANAGEMENT_PORT}/api/queues/%2F?columns={columns}",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            rows: list[dict[str, Any]] = json.loads(response.read())
        return rows

    def queues(self) -> dict[str, int]:
        """Messages (ready + unacknowledged) per queue of the default vhost."""
        return {row["name"]: int(row.get("messages") or 0) for row in self.queue_details()}

    # Processes

    def process_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TASKHUB_", "OTEL_"))}
        return {
            **base,
            **self.urls(),
            "TASKHUB_AUTH__SECRET_KEY": self.secret_key,
            "TASKHUB_BROKER__URL": self.broker_url,
            # A job whose worker was killed is taken over after its lease: short, so the
            # run drains in seconds (jobs time out at 90 % of it).
            "TASKHUB_BROKER__JOB_LEASE_SECONDS": "10",
            "TASKHUB_SMTP__HOST": HOST,
            "TASKHUB_SMTP__PORT": str(self.smtp_port),
            "TASKHUB_SMTP__TIMEOUT_SECONDS": "5",
            # The receiver is on loopback (docs/security.md, the SSRF guard).
            "TASKHUB_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8","::1/128"]',
            "TASKHUB_WEBHOOKS__TIMEOUT": "5",
            "TASKHUB_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
            "TASKHUB_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            "TASKHUB_LOG_JSON": "false",
            "TASKHUB_LOG_LEVEL": "INFO",
        }

    def up(self) -> None:
        started = time.monotonic()
        broker = concurrent.futures.ThreadPoolExecutor(1).submit(self.fresh_rabbit)
        self.devstack("up", timeout=300)
        env = self.process_env()
        run([str(TASKHUB), "migrate"], env, 120)
        self.truncate()
        run(["redis-cli", "-h", HOST, "-p", str(REDIS_PORT), "flushall"], dict(os.environ), 15)
        credentials = self.directory / "chaos-admin-credentials"
        run([str(TASKHUB), "bootstrap-admin", "--credentials-file", str(credentials)], env, 60)
        broker.result(timeout=180)
        print(f"data stack, database and broker ready in {time.monotonic() - started:.0f}s")

    def truncate(self) -> None:
        """Every table but Alembic's: the reconciliation counts this run's rows only."""
        listing = (
            "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        psql = ["psql", "-h", HOST, "-p", str(PRIMARY_PORT), "-U", "postgres", "-qAt", DB]
        tables = run([*psql, "-c", listing], dict(os.environ), 30).strip()
        run([*psql, "-c", f"TRUNCATE {tables} RESTART IDENTITY CASCADE"], dict(os.environ), 60)

    def down(self) -> None:
        """Stops the broker and the data stack (its data stays: the next run starts
        fast; the truncation gives it a clean database)."""
        self.rabbit("stop")
        self.devstack("down")
