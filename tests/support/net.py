"""Free local ports for the servers the tests start."""

from __future__ import annotations

import os
import socket

# The machine's PostgreSQL: the per-run database of the in-process tests.
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
# Nothing listens there (tcpmux): the address of an unreachable service in a test.
CLOSED_PORT = 1


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on ``port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
