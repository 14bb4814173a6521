"""The port guard (tests/support/portguard.py) catches what it must: a connection to a
port outside the allowlist, from pytest's process and from a process the tests start,
and the session then fails with the list."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import portguard

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "support" / "site"
# Nothing listens on port 2 (compressnet): connecting fails at once, and it is outside.
OUTSIDE = 2


def child_env(directory: Path | None, allow: str = "") -> dict[str, str]:
    """This session's environment with its own guard replaced by ``directory``'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTGUARD_")}
    env["PYTHONPATH"] = str(SITE)
    if directory is not None:
        env[portguard.DIR_VARIABLE] = str(directory)
        env[portguard.ALLOW_VARIABLE] = allow
    return env


class TestAllowlist:
    @pytest.mark.parametrize("port", [6379, 5672, 4317, 8000, 56442, 56389])
    def test_default_ports_of_services_and_the_dev_stack_are_outside(self, port: int) -> None:
        assert not portguard.allowed(port, frozenset())

    def test_explicit_and_chosen_ports_are_inside(self) -> None:
        assert portguard.allowed(5432, frozenset({5432}))
        assert portguard.allowed(45678, frozenset())  # a kernel-chosen free port

    def test_the_guard_records_only_what_is_outside(self, tmp_path: Path) -> None:
        guard = portguard.Guard(tmp_path, frozenset({5432}))
        with socket.socket() as sock:
            guard("socket.connect", (sock, ("127.0.0.1", 5432)))
            guard("socket.connect", (sock, ("127.0.0.1", 6379)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            guard("socket.connect", (udp, ("127.0.0.1", 53)))
        assert [line.rsplit(" ", 1)[1] for line in portguard.caught(tmp_path)] == ["127.0.0.1:6379"]


class TestChildProcess:
    def test_a_started_process_reports_its_connections_outside(self, tmp_path: Path) -> None:
        program = textwrap.dedent(
            f"""
            import asyncio, socket
            import uvloop
            try:
                socket.create_connection(("127.0.0.1", {OUTSIDE}), timeout=2)
            except OSError:
                pass
            async def main():
                try:
                    await asyncio.open_connection("127.0.0.1", {OUTSIDE + 1})
                except OSError:
                    pass
            uvloop.run(main())
            """
        )
        subprocess.run(
            [sys.executable, "-c", program], env=child_env(tmp_path), check=True, timeout=30
        )
        caught = portguard.caught(tmp_path)
        assert [line.rsplit(" ", 1)[1] for line in caught] == [
            f"127.0.0.1:{OUTSIDE}",
            f"127.0.0.1:{OUTSIDE + 1}",
        ]


class TestSession:
    def test_a_session_whose_test_connects_outside_fails_with_the_list(
        self, tmp_path: Path
    ) -> None:
        test = tmp_path / "test_outside.py"
        test.write_text(
            textwrap.dedent(
                f"""
                import socket

                def test_reaches_outside():
                    try:
                        socket.create_connection(("127.0.0.1", {OUTSIDE}), timeout=2)
                    except OSError:
                        pass
                """
            )
        )
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.support.guard_plugin", "-q", str(test)],
            env=child_env(None),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
        assert "1 passed" in run.stdout
        assert "connections outside the test stack's ports" in run.stdout
        assert f"connected to 127.0.0.1:{OUTSIDE}" in run.stdout
