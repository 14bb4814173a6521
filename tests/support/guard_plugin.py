"""The pytest side of the port guard: installed at configure, in this process and
(through the environment) in every process the tests start; the session fails with the
list of what it caught. tests/conftest.py loads it; it imports nothing of the app."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests import stack
from tests.chaos import stack as chaos_stack
from tests.support import portguard
from tests.support.net import CLOSED_PORT, PG_PORT

SITE = Path(__file__).resolve().parent / "site"
_DIR = pytest.StashKey[Path]()
_CAUGHT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    directory = Path(tempfile.mkdtemp(prefix="taskhub-portguard-"))
    allow = frozenset(
        {
            PG_PORT,
            CLOSED_PORT,
            stack.PRIMARY_PORT,
            stack.REPLICA_PORT,
            stack.PGBOUNCER_PORT,
            stack.REDIS_PORT,
            # `make chaos` and tests/chaos: a stack of its own on fixed ports.
            chaos_stack.PRIMARY_PORT,
            chaos_stack.REPLICA_PORT,
            chaos_stack.PGBOUNCER_PORT,
            chaos_stack.REDIS_PORT,
            chaos_stack.RABBITMQ_PORT,
            chaos_stack.MANAGEMENT_PORT,
        }
    )
    os.environ[portguard.DIR_VARIABLE] = str(directory)
    os.environ[portguard.ALLOW_VARIABLE] = ",".join(str(p) for p in sorted(allow))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p
    )
    portguard.install(directory, allow)
    config.stash[_DIR] = directory


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    directory = session.config.stash[_DIR]
    caught = portguard.caught(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if caught:
        session.config.stash[_CAUGHT] = caught
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    caught = terminalreporter.config.stash.get(_CAUGHT, [])
    if caught:
        terminalreporter.section("connections outside the test stack's ports", red=True)
        for line in caught:
            terminalreporter.line(line)
        terminalreporter.line(f"{len(caught)} connection(s): give the process the service's URL")
