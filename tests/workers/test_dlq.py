"""``taskhub dlq list|replay|purge`` against a real broker."""

from __future__ import annotations

import asyncio
import subprocess

from kombu import Connection, Producer

from taskhub_workers import topology
from tests.workers.conftest import TASKHUB, Stack


def _taskhub(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKHUB, *args], env=stack.env, capture_output=True, text=True, timeout=60, check=False
    )


def _dead_letter(url: str, queue: str, n: int) -> None:
    with Connection(url) as connection:
        topology.declare(connection)
        producer = Producer(connection.default_channel)
        for i in range(n):
            producer.publish(
                {"n": i},
                exchange=topology.DEAD_LETTER_EXCHANGE,
                routing_key=queue,
                headers={"id": f"job-{i}", "task": "maintenance.x", "x-taskhub-error": "Boom: no"},
            )


class TestDlqCli:
    async def test_list_shows_and_keeps_purge_empties(self, stack: Stack) -> None:
        await asyncio.to_thread(_dead_letter, stack.broker_url, "maintenance", 2)
        listed = await asyncio.to_thread(_taskhub, stack, "dlq", "list", "maintenance")
        assert listed.returncode == 0, listed.stderr
        assert "job-0  maintenance.x" in listed.stdout and "error=Boom: no" in listed.stdout
        assert "2 dead letter(s) in maintenance.dlq" in listed.stdout
        twice = await asyncio.to_thread(_taskhub, stack, "dlq", "list", "maintenance")
        assert twice.stdout == listed.stdout  # listing does not consume
        purged = await asyncio.to_thread(_taskhub, stack, "dlq", "purge", "maintenance")
        assert "purged 2 message(s) from maintenance.dlq" in purged.stdout
        again = await asyncio.to_thread(_taskhub, stack, "dlq", "list", "maintenance")
        assert "0 dead letter(s)" in again.stdout

    async def test_unknown_queue_is_an_error(self, stack: Stack) -> None:
        result = await asyncio.to_thread(_taskhub, stack, "dlq", "list", "nope")
        assert result.returncode != 0
        assert "unknown queue 'nope'" in result.stderr
