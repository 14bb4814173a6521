"""Every test process stays on the test stack's ports.

An audit hook on ``socket.connect`` records each TCP connection to a port outside the
allowlist: the test stack's ports, the machine's PostgreSQL (the per-run database), the
port of an unreachable service (``net.CLOSED_PORT``), and
the ports the tests choose for what they start (free ports from the kernel's ephemeral
range, the RabbitMQ nodes' random ports), less the dev stack's ports. A service left to
its default (Redis 6379, RabbitMQ 5672, an OTLP collector on 4317, the dev stack) is
therefore caught. pytest installs it in its own process and, through ``site/`` on
PYTHONPATH, in every Python process the tests start; each writes what it caught to
``PORTGUARD_DIR``, and the session fails with the list (tests/conftest.py).

It records rather than refuses, so the test goes on and the session names every
offender, the process and the address."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

DIR_VARIABLE = "PORTGUARD_DIR"
ALLOW_VARIABLE = "PORTGUARD_ALLOW"
# The ports tests pick: the kernel's ephemeral ports and the brokers' random ports.
CHOSEN = range(30000, 65536)
# scripts/devstack.sh's defaults: the dev stack is never the tests' business.
DEV_STACK = frozenset({55442, 55443, 56442, 56389})


def allowed(port: int, explicit: frozenset[int]) -> bool:
    return port in explicit or (port in CHOSEN and port not in DEV_STACK)


def parse_allow(value: str) -> frozenset[int]:
    return frozenset(int(p) for p in value.split(",") if p.strip())


class Guard:
    """Records the connections of this process that leave the allowlist."""

    def __init__(self, directory: Path, explicit: frozenset[int]) -> None:
        self.directory = directory
        self.explicit = explicit

    def check(self, host: object, port: object) -> None:
        if isinstance(port, int | str) and not allowed(int(port), self.explicit):
            program = " ".join(sys.argv[:2]) or sys.executable
            line = f"{program} (pid {os.getpid()}) connected to {host}:{port}\n"
            try:
                with (self.directory / f"{os.getpid()}.txt").open("a") as out:
                    out.write(line)
            except OSError:  # the session is over: say it where it can be seen
                sys.stderr.write(f"portguard: {line}")

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.connect":
            return
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            self.check(address[0], address[1])


def install(directory: Path, explicit: frozenset[int]) -> None:
    guard = Guard(directory, explicit)
    sys.addaudithook(guard)
    _watch_uvloop(guard)


def _watch_uvloop(guard: Guard) -> None:
    """uvloop (uvicorn's loop in `taskhub api`) connects in libuv, where no audit event
    fires: its public ``create_connection`` is watched instead."""
    try:
        import uvloop
    except ImportError:
        return
    original = uvloop.Loop.create_connection

    async def create_connection(
        self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **kw: Any
    ) -> Any:
        if kw.get("sock") is None and kw.get("path") is None:
            guard.check(host, port)
        return await original(self, protocol_factory, host, port, **kw)

    uvloop.Loop.create_connection = create_connection  # type: ignore[method-assign]


def install_from_environment() -> None:
    """For the processes the tests start (``site/sitecustomize.py``)."""
    directory = os.environ.get(DIR_VARIABLE)
    if directory:
        install(Path(directory), parse_allow(os.environ.get(ALLOW_VARIABLE, "")))


def caught(directory: Path) -> list[str]:
    return sorted(
        line for path in directory.glob("*.txt") for line in path.read_text().splitlines()
    )
