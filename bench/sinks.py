"""The webhook receiver of the whole-stack benchmark: answers every POST with 204, on
keep-alive connections, and counts what it received (printed on SIGTERM).

    .venv/bin/python bench/sinks.py --port 8118

The mail sink is aiosmtpd's own (``python -m aiosmtpd -n -c aiosmtpd.handlers.Sink``),
as ``make dev`` runs it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects
    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with Receiver.lock:
            Receiver.received += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per delivery would cost more than the delivery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        print(f"webhook sink: {Receiver.received} deliveries received", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"webhook sink on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
