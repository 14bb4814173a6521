"""scripts/devstack.sh in a folder the postgres user cannot enter (a checkout in root's
0700 home): the stack still starts, its data where the services can reach it, and a
start that cannot succeed stops at once with one line. Only the primary and Redis, on
ports of their own, in a fresh temporary folder: a few seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import SCRIPT
from tests.support.net import free_ports

RELOCATED = Path("/var/lib/taskhub-devstack")


@pytest.fixture(autouse=True)
def healthy_stack() -> Iterator[None]:
    """Replaces the package's: these tests need neither the test stack nor the API."""
    yield


class Stack:
    def __init__(self, name: Path) -> None:
        self.name = name
        primary, replica, bouncer, redis = free_ports(4)
        self.primary_port, self.redis_port = primary, redis
        self.env = {
            **os.environ,
            "STACK_DIR": str(name),
            "PRIMARY_PORT": str(primary),
            "REPLICA_PORT": str(replica),
            "PGBOUNCER_PORT": str(bouncer),
            "REDIS_PORT": str(redis),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="taskhub-0700-") as home:
        Path(home).chmod(0o700)
        stack = Stack(Path(home) / "checkout" / ".local" / "stack")
        try:
            yield stack
        finally:
            stack.run("purge")


class TestStackLocation:
    def test_a_stack_under_a_0700_folder_runs_where_its_services_reach(self, stack: Stack) -> None:
        stack.ok("start", "primary")
        stack.ok("start", "redis")

        status = stack.ok("status")
        assert f"primary    up :{stack.primary_port}" in status
        assert f"redis      up :{stack.redis_port}" in status
        place = Path(stack.ok("where").strip())
        if os.geteuid() == 0:  # the services run as postgres, who cannot enter the folder
            assert place.is_relative_to(RELOCATED)
            assert stack.name.is_symlink()
            assert stack.name.resolve() == place
            assert place.owner() == "postgres"
            assert (place / "origin").read_text().strip() == str(stack.name)
        else:  # they run as the caller, who can
            assert place == stack.name
        assert (place / "primary" / "PG_VERSION").is_file()

        stack.ok("purge")
        assert not place.exists()
        assert not stack.name.exists()
        assert not stack.name.is_symlink()


class TestStartFailure:
    def test_a_taken_port_stops_the_script_with_one_line(self, stack: Stack) -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", stack.redis_port))
            squatter.listen()
            result = stack.run("start", "redis")

        assert result.returncode == 1
        # Before it, at most the line that says where the stack lives.
        assert result.stderr.splitlines()[-1] == (
            f"devstack: Redis did not start: 127.0.0.1:{stack.redis_port} is taken by"
            f" another program (ss -ltnp 'sport = :{stack.redis_port}'); stop it or set"
            " REDIS_PORT"
        )
        assert result.stderr.count("did not start") == 1
