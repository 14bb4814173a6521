"""What the outside world sees: an HTTP webhook receiver that verifies signatures and
keeps every raw receipt, and an SMTP sink (aiosmtpd) that keeps every message."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.chaos.stack import HOST, free_port


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(mac.hexdigest(), parts["v1"])
    except (KeyError, ValueError):
        return False


@dataclass(frozen=True)
class Receipt:
    path: str
    delivery_id: str
    event_type: str
    signature_ok: bool
    at: float


@dataclass
class WebhookReceiver:
    """Answers 200 to every POST; ``secrets`` maps a path to its webhook's secret."""

    secrets: dict[str, str] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self) -> None:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a worker killed while posting): the
                    # connection broke, nothing was delivered, and no answer can go back.
                    return
                secret = state.secrets.get(self.path, "")
                state.receipts.append(
                    Receipt(
                        self.path,
                        self.headers.get("X-TaskHub-Delivery", ""),
                        self.headers.get("X-TaskHub-Event", ""),
                        signature_ok(secret, body, self.headers.get("X-TaskHub-Signature", "")),
                        time.time(),
                    )
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    job: str


@dataclass
class MailSink:
    messages: list[Mail] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        self.messages.append(
            Mail(
                str(message.get("Message-ID", "")),
                str(message.get("To", "")),
                str(message.get("X-TaskHub-Job", "")),
            )
        )
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname=HOST, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
