"""What a real `taskhub api` answers to requests its HTTP parser rejects before the app."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from tests.e2e.conftest import LiveServer


def _exchange(server: LiveServer, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class TestUnparsableRequests:
    def test_a_header_holding_del_is_a_400_problem(self, live_server: LiveServer) -> None:
        status, headers, body = _exchange(
            live_server,
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Odd: a\x7fb\r\n\r\n",
        )
        assert status.startswith(b"HTTP/1.1 400"), status
        assert headers["content-type"] == "application/problem+json"
        assert int(headers["content-length"]) == len(body)
        problem = json.loads(body)
        assert problem["status"] == 400 and problem["title"] == "Bad Request"
        assert [e["field"] for e in problem["errors"]] == ["request"]

    def test_a_valid_request_on_the_same_server_is_served(self, live_server: LiveServer) -> None:
        status, headers, body = _exchange(
            live_server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status.startswith(b"HTTP/1.1 200"), status
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"status": "ok"}
