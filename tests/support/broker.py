"""The project's own RabbitMQ node (scripts/rabbitmq-node.sh) on ports of its own; the
fixtures in tests/conftest.py start one per session (tests may stop and start it)."""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import is_free

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = str(ROOT / "scripts" / "rabbitmq-node.sh")


@dataclass
class Broker:
    port: int
    directory: Path
    management_port: int | None = None  # the management HTTP API, when set

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [NODE_SCRIPT, "ctl", str(self.directory), str(self.port), "-q", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return result.stdout

    def start(self) -> None:
        env = dict(os.environ)
        if self.management_port is not None:
            env["MANAGEMENT_PORT"] = str(self.management_port)
        subprocess.run(
            [NODE_SCRIPT, "start", str(self.directory), str(self.port)],
            check=True,
            timeout=120,
            env=env,
        )

    def stop(self) -> None:
        subprocess.run(
            [NODE_SCRIPT, "stop", str(self.directory), str(self.port)], check=True, timeout=120
        )

    def new_vhost(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def depths(self, url: str) -> dict[str, int]:
        """Messages per queue (ready + unacknowledged) in the URL's vhost."""
        vhost = url.rsplit("/", 1)[1]
        out = self.ctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
        pairs = (line.split() for line in out.splitlines() if line.strip())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2}


def new_node(*, management: bool) -> Broker:
    """A node not started yet: its port, its Erlang distribution's (port + 20000) and,
    with ``management``, its management API's (port + 1) all free."""
    for _ in range(50):
        port = random.randint(30000, 44000)
        if all(is_free(p) for p in (port, port + 20000, port + 1)):
            break
    directory = ROOT / ".local" / f"test-rabbitmq-{port}"
    return Broker(port, directory, management_port=port + 1 if management else None)
