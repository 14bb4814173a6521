"""``taskhub``: one entry point for every process of the image."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

from taskhub_api.settings import Settings, get_settings


def _generate_password() -> str:
    from taskhub_api.auth.passwords import password_problems

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
    from taskhub_api.auth.passwords import hash_password, password_problems
    from taskhub_api.db import Database
    from taskhub_api.users.repository import UserRepository

    username = settings.bootstrap_admin_username
    db = Database(settings.db)
    try:
        async with db.transaction() as session:
            users = UserRepository(session)
            existing = await users.get_by_username(username)
            if existing is not None:
                if "admin" not in existing.roles:
                    await users.update(existing.id, {"roles": [*existing.roles, "admin"]})
                print(f"bootstrap admin '{existing.username}' exists")
                return
            generated = False
            if settings.bootstrap_admin_password is not None:
                password = settings.bootstrap_admin_password.get_secret_value()
                problems = password_problems(password, username)
                if problems:
                    sys.exit("TASKHUB_BOOTSTRAP_ADMIN_PASSWORD " + "; ".join(problems))
            else:
                stored = _read_credentials(credentials_file, username)
                password, generated = (stored, False) if stored else (_generate_password(), True)
            await users.create(
                username=username,
                email=settings.bootstrap_admin_email,
                password_hash=await hash_password(password),
                roles=["admin"],
            )
        if generated:
            _write_private(credentials_file, f"username={username}\npassword={password}\n")
            print(f"bootstrap admin '{username}' created with password: {password}")
            print(f"(saved to {credentials_file}, mode 0600; it is not shown again)")
        else:
            print(f"bootstrap admin '{username}' created")
    finally:
        await db.dispose()


def migrate() -> None:
    from alembic import command

    from taskhub_api.schema import alembic_config

    command.upgrade(alembic_config(get_settings().db.url), "head")


def serve_api(host: str, port: int, workers: int, reload: bool) -> None:
    import uvicorn

    # X-Forwarded-* only from the trusted proxies of the settings (the rate limiter
    # resolves client addresses the same way).
    trusted = get_settings().ratelimit.trusted_proxies
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
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="taskhub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)")
    api.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's server
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--reload", action="store_true")
    commands.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    admin = commands.add_parser("bootstrap-admin", help="create the bootstrap admin user")
    admin.add_argument("--credentials-file", type=Path, default=Path(".local/admin-credentials"))
    for reserved in ("worker", "relay", "beat", "operator"):
        commands.add_parser(reserved, help="not available in this release")
    args = parser.parse_args(argv)

    if args.command == "api":
        serve_api(args.host, args.port, args.workers, args.reload)
    elif args.command == "migrate":
        migrate()
    elif args.command == "bootstrap-admin":
        asyncio.run(bootstrap_admin(get_settings(), args.credentials_file))
    else:
        sys.exit(f"taskhub {args.command}: not available in this release")


if __name__ == "__main__":
    main()
