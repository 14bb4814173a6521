"""``taskhub``: one entry point for every process of the image."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from taskhub_api.schema import PHASES, Phase
from taskhub_api.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from taskhub_api.schema import SchemaVersion


def _generate_password() -> str:
    from taskhub_api.identity.passwords import password_problems

    while True:
        candidate = secrets.token_urlsafe(18)
        if not password_problems(candidate, "admin"):
            return candidate


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    path.chmod(0o600)


def _read_credentials(path: Path, username: str) -> str | None:
    if not path.is_file():
        return None
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return values.get("password") if values.get("username") == username else None


async def bootstrap_admin(settings: Settings, credentials_file: Path) -> None:
    """Create the bootstrap admin once; later runs only make sure it is an admin."""
    from taskhub_api.db import Database
    from taskhub_api.errors import AppError
    from taskhub_api.users.service import user_service

    username = settings.bootstrap_admin_username
    configured = settings.bootstrap_admin_password
    generated = False
    if configured is not None:
        password = configured.get_secret_value()
    else:
        stored = _read_credentials(credentials_file, username)
        password, generated = (stored, False) if stored else (_generate_password(), True)
    db = Database(settings.db)
    try:
        async with db.transaction() as session:
            outcome = await user_service.ensure_admin(
                session,
                username=username,
                email=settings.bootstrap_admin_email,
                password=password,
                check_password=configured is not None,
            )
    except AppError as exc:
        source = "TASKHUB_BOOTSTRAP_ADMIN_PASSWORD: " if configured is not None else ""
        sys.exit(f"bootstrap-admin: {source}{exc.detail}")
    finally:
        await db.dispose()
    if not outcome.created:
        print(
            f"bootstrap admin '{username}' exists"
            + (" (made an admin)" if outcome.promoted else "")
        )
        if outcome.password_unchanged:
            print(
                "its password was left unchanged: TASKHUB_BOOTSTRAP_ADMIN_PASSWORD differs "
                f"from it; to change it, run `taskhub set-password {username}`"
            )
    elif generated:
        _write_private(credentials_file, f"username={username}\npassword={password}\n")
        print(f"bootstrap admin '{username}' created with password: {password}")
        print(f"(saved to {credentials_file}, mode 0600; it is not shown again)")
    else:
        print(f"bootstrap admin '{username}' created")


def _read_new_password(from_stdin: bool) -> str:
    """The new password: typed twice at a terminal, or the first line of standard input
    (``--password-stdin``). Never an argument: arguments show in the process list."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    password = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != password:
        sys.exit("set-password: the two passwords differ; nothing was changed")
    return password


async def set_password(settings: Settings, username: str, password: str) -> None:
    """Change a local user's password; every login of the user ends."""
    from taskhub_api.db import Database
    from taskhub_api.errors import AppError
    from taskhub_api.users.service import user_service

    db = Database(settings.db)
    try:
        async with db.transaction() as session:
            await user_service.set_password(session, username, password)
    except AppError as exc:
        sys.exit(f"set-password: {exc.detail}")
    finally:
        await db.dispose()
    print(f"password of '{username}' changed; its sessions were ended")


def migrate(phase: Phase) -> None:
    """Upgrade to the phase's target under the migration lock; on failure exit 1 with
    one line (no traceback: a Job's log should say what is wrong, not where)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from taskhub_api.observability import configure_logging
    from taskhub_api.schema import MigrationHistoryError, SchemaVersion

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(_migrate(settings.db.url, SchemaVersion(), phase))
    except OSError as exc:  # refused, unresolvable, timed out
        sys.exit(f"taskhub migrate: cannot reach the database: {exc}")
    except (SQLAlchemyError, CommandError, MigrationHistoryError) as exc:
        sys.exit(f"taskhub migrate: {str(exc).splitlines()[0]}")


async def _migrate(url: str, versions: SchemaVersion, phase: Phase) -> None:
    from taskhub_api.schema import log, migration_engine

    engine = migration_engine(url)
    try:
        # The lock, the reading of the revision and every revision share this one
        # transaction (see lock_migrations); it commits when the block exits.
        async with engine.connect() as conn, conn.begin():
            outcome = await conn.run_sync(_upgrade_locked, versions, phase)
    finally:
        await engine.dispose()
    log.info(outcome)


def _upgrade_locked(connection: Connection, versions: SchemaVersion, phase: Phase) -> str:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    from taskhub_api.schema import MigrationHistoryError, alembic_config, lock_migrations

    lock_migrations(connection)
    # Only now: whoever held the lock may have moved the schema on.
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise MigrationHistoryError(f"the database is at several revisions: {heads}")
    current = heads[0] if heads else None
    target = versions.target(current, phase)
    left = [rev.revision for rev in versions.pending(target)]
    later = f"; {len(left)} from {left[0]} (contract) on wait for --phase contract" if left else ""
    if current is not None and current not in versions.known:
        return f"schema at {current} is ahead of this release (head {versions.head}): nothing to do"
    if target is None or target == current:
        return f"schema already at {current or 'nothing'}: nothing to do{later}"
    config = alembic_config()
    config.attributes["connection"] = connection  # env.py runs in our transaction
    command.upgrade(config, target)
    return f"schema upgraded from {current or 'nothing'} to {target}{later}"


def serve_api(host: str, port: int, workers: int, reload: bool, metrics_port: int = 0) -> None:
    if metrics_port and metrics_port == port:
        sys.exit(f"taskhub api: --metrics-port {metrics_port} is the API's own port")
    if metrics_port and (workers > 1 or reload):
        # The app runs in uvicorn's child processes: before anything imports
        # prometheus_client (here or in a child, which inherits the environment), they
        # are told to write their metrics here, and this process serves the sum.
        metrics_dir = tempfile.mkdtemp(prefix="taskhub-api-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    import uvicorn

    from taskhub_api.kit.server import ProblemHttpToolsProtocol
    from taskhub_api.observability import configure_logging, serve_metrics

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if metrics_port:
        # Not on the API's port: the public Service and the Ingress never reach it.
        serve_metrics(host, metrics_port)
    # X-Forwarded-* only from the trusted proxies of the settings (the rate limiter
    # resolves client addresses the same way).
    trusted = settings.ratelimit.trusted_proxies
    uvicorn.run(
        "taskhub_api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_config=None,
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=",".join(trusted) or None,
        server_header=False,
        http=ProblemHttpToolsProtocol,  # unparsable requests get problem+json too
        # A new worker (--workers N) re-imports this module before it can answer the
        # supervisor's first ping: several seconds on a busy node, where uvicorn's 5 s
        # had it kill and replace every new worker, over and over.
        timeout_worker_healthcheck=30,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="taskhub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)")
    api.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's server
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--reload", action="store_true")
    api.add_argument("--metrics-port", type=int, default=9807, help="0 disables /metrics")
    migration = commands.add_parser(
        "migrate", help="apply database migrations (under a lock; to head by default)"
    )
    migration.add_argument(
        "--phase",
        choices=PHASES,
        default="contract",
        help="expand: stop before the first contract revision (old code still runs); "
        "contract (the default): everything, to head",
    )
    admin = commands.add_parser("bootstrap-admin", help="create the bootstrap admin user")
    admin.add_argument("--credentials-file", type=Path, default=Path(".local/admin-credentials"))
    passwd = commands.add_parser(
        "set-password",
        help="set a local user's password (typed at the terminal, or from stdin); "
        "ends the user's sessions",
    )
    passwd.add_argument("username")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    worker = commands.add_parser("worker", help="run a Celery worker (background jobs)")
    worker.add_argument(
        "--queues", default="notifications,webhooks,maintenance", help="comma-separated"
    )
    worker.add_argument("--concurrency", type=int, default=2)
    # Not "threads": a worker process has one event loop, which one thread at a time runs.
    worker.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    worker.add_argument("--metrics-port", type=int, default=9808, help="0 disables /metrics")
    relay = commands.add_parser("relay", help="run the outbox relay and the event dispatcher")
    relay.add_argument("--without-dispatcher", action="store_true")
    relay.add_argument("--metrics-port", type=int, default=9809, help="0 disables /metrics")
    dispatcher = commands.add_parser(
        "dispatcher", help="run the event dispatcher alone (events -> jobs)"
    )
    dispatcher.add_argument("--metrics-port", type=int, default=9811, help="0 disables /metrics")
    beat = commands.add_parser("beat", help="run Celery beat (maintenance schedule)")
    beat.add_argument(
        "--schedule-file",
        type=Path,
        default=Path(tempfile.gettempdir()) / "taskhub-celerybeat-schedule",
    )
    beat.add_argument("--metrics-port", type=int, default=9810, help="0 disables /metrics")
    dlq = commands.add_parser("dlq", help="inspect, replay or purge dead letters")
    dlq.add_argument("action", choices=("list", "replay", "purge"))
    dlq.add_argument("queue", help="notifications, webhooks, maintenance or taskhub.dispatch")
    dlq.add_argument("--limit", type=int, default=None)
    operator = commands.add_parser(
        "operator", help="run the Kubernetes operator (rollouts gated on migrations, scaling)"
    )
    operator.add_argument("--namespace", help="namespace to watch (default: the pod's own)")
    operator.add_argument("--liveness-port", type=int, default=8081, help="0 serves no /healthz")
    operator.add_argument("--verbose", action="store_true")
    webhooks = commands.add_parser("webhooks", help="webhook maintenance")
    webhook_actions = webhooks.add_subparsers(dest="action", required=True)
    rotate = webhook_actions.add_parser(
        "rotate-key",
        help="encrypt every webhook secret with webhooks.active_key_id (plaintext rows too); "
        "idempotent, safe while deliveries run",
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    commands.add_parser("routes", help="list the API's routes and whether each is planned")
    args = parser.parse_args(argv)

    if args.command == "api":
        serve_api(args.host, args.port, args.workers, args.reload, args.metrics_port)
    elif args.command == "migrate":
        migrate(args.phase)
    elif args.command == "bootstrap-admin":
        asyncio.run(bootstrap_admin(get_settings(), args.credentials_file))
    elif args.command == "set-password":
        password = _read_new_password(args.password_stdin)
        asyncio.run(set_password(get_settings(), args.username, password))
    elif args.command in ("worker", "relay", "dispatcher", "beat", "dlq"):
        _async_layer(args)
    elif args.command == "webhooks":
        rotate_webhook_key(get_settings(), args.batch_size)
    elif args.command == "routes":
        list_routes(get_settings())
    elif args.command == "operator":
        from taskhub_operator.main import run as run_operator

        run_operator(args.namespace, args.liveness_port, get_settings().log_json, args.verbose)
    else:
        sys.exit(f"taskhub {args.command}: not available in this release")


def _async_layer(args: argparse.Namespace) -> None:
    if args.command == "worker" and args.metrics_port:
        # Before anything imports prometheus_client: pool processes write their metrics
        # here and the main process serves the sum.
        metrics_dir = tempfile.mkdtemp(prefix="taskhub-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from taskhub_api.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if args.command == "worker":
        from taskhub_workers.services import run_worker

        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        run_worker(queues, args.concurrency, args.pool, args.metrics_port, settings.log_level)
    elif args.command == "relay":
        from taskhub_workers.services import run_relay

        run_relay(dispatch=not args.without_dispatcher, metrics_port=args.metrics_port)
    elif args.command == "dispatcher":
        from taskhub_workers.services import run_dispatcher

        run_dispatcher(metrics_port=args.metrics_port)
    elif args.command == "beat":
        from taskhub_workers.services import run_beat

        run_beat(args.schedule_file, settings.log_level, args.metrics_port)
    else:
        dead_letters(settings, args.action, args.queue, args.limit)


def rotate_webhook_key(settings: Settings, batch_size: int) -> None:
    """`taskhub webhooks rotate-key`: exit 1 when a secret could not be read (it is
    left as it was; add its key to webhooks.secret_keys and run again)."""
    from taskhub_api.db import Database
    from taskhub_api.observability import configure_logging
    from taskhub_api.webhooks.keyring import KeyRing
    from taskhub_api.webhooks.service import rotate_secrets

    configure_logging(settings.log_level, settings.log_json)
    keyring = KeyRing.from_settings(settings)

    async def run() -> None:
        db = Database(settings.db)
        try:
            outcome = await rotate_secrets(db, keyring, max(1, batch_size))
        finally:
            await db.dispose()
        print(f"{outcome.rotated} webhook secret(s) now encrypted with key {keyring.active_key_id}")
        for problem in outcome.failed:
            print(f"not rotated: {problem}", file=sys.stderr)
        if outcome.failed:
            sys.exit(f"{len(outcome.failed)} webhook secret(s) could not be read")

    asyncio.run(run())


def list_routes(settings: Settings) -> None:
    """`taskhub routes`: each route of the API (methods, path, name) and whether its
    parameters are planned (kit/routing.py), else why not."""
    from taskhub_api.kit.routing import describe
    from taskhub_api.main import create_app

    routes = describe(create_app(settings))
    width = max(len(path) for _, path, _, _ in routes)
    for methods, path, name, not_planned in routes:
        planned = "planned" if not_planned is None else f"not planned: {not_planned}"
        print(f"{methods:<7} {path:<{width}}  {name:<24} {planned}")
    count = sum(not_planned is None for *_, not_planned in routes)
    print(f"{count} of {len(routes)} routes planned")


def dead_letters(settings: Settings, action: str, queue: str, limit: int | None) -> None:
    from taskhub_workers import dlq

    url = settings.broker.url
    try:
        if action == "list":
            letters = dlq.list_dead(url, queue, limit or 100)
            for letter in letters:
                print(
                    f"{letter.id}  {letter.job}  attempts={letter.attempts}  "
                    f"failed_at={letter.failed_at}  error={letter.error}  {letter.args}"
                )
            print(f"{len(letters)} dead letter(s) in {queue}.dlq")
        elif action == "replay":
            print(f"replayed {dlq.replay(url, queue, limit)} message(s) from {queue}.dlq")
        else:
            print(f"purged {dlq.purge(url, queue)} message(s) from {queue}.dlq")
    except ValueError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
