"""Job execution on real worker processes: retries into the DLQ and replay, duplicate
deliveries to several workers, a worker killed mid-job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading

import asyncpg
import httpx

from taskhub_api.webhooks.jobs import delivery_job
from taskhub_workers import dlq
from tests.support.users import NewUser, create_task
from tests.support.wait import eventually
from tests.workers.conftest import TASKHUB, Receiver, Stack, job_state
from tests.workers.helpers import create_webhook, enqueue, event_id


def _deliveries(receiver: Receiver, path: str) -> set[str]:
    return {r.headers["X-TaskHub-Delivery"] for r in receiver.at(path)}


class TestDeadLetters:
    async def test_always_failing_job_dead_letters_after_4_attempts_and_replays(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
        pg: asyncpg.Connection,
    ) -> None:
        path = "/always-500"
        receiver.status[path] = 500
        owner = await new_user()
        hook = await create_webhook(client, owner, receiver.url(path), ["task.created"])
        task = await create_task(client, owner)
        key = delivery_job(hook["id"], await event_id(pg, task["id"], "task.created")).key
        stack.worker(queues="webhooks")
        stack.relay()

        async def dead_letters() -> list[dlq.DeadLetter]:
            return await asyncio.to_thread(dlq.list_dead, stack.broker_url, "webhooks")

        letters = await eventually(dead_letters, 60, "the job in webhooks.dlq")
        await asyncio.sleep(2)  # nothing more may arrive once it is dead-lettered
        assert len(receiver.at(path)) == 4, stack.log_text()
        assert len(_deliveries(receiver, path)) == 1  # one delivery id on every attempt
        assert [(d.id, d.attempts) for d in letters] == [(key, 4)]
        assert (
            letters[0].error
            == f"DeliveryFailed: delivery {key.split(':')[1]} to {receiver.url(path)}: HTTP 500"
        )
        state = await job_state(pg, key)
        assert state is not None and (state["status"], state["attempts"]) == ("dead", 4)
        logged = await client.get(
            f"/api/v1/webhooks/{hook['id']}/deliveries", headers=owner.headers
        )
        (delivery,) = logged.json()["items"]
        assert [a["response_status"] for a in delivery["attempts"]] == [500] * 4
        assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3, 4]

        receiver.status[path] = 200
        replay = await asyncio.to_thread(
            subprocess.run,
            [TASKHUB, "dlq", "replay", "webhooks"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "replayed 1 message(s) from webhooks.dlq" in replay.stdout

        async def done() -> bool:
            state = await job_state(pg, key)
            return state is not None and state["status"] == "done"

        await eventually(done, 30, "the replayed job to succeed")
        assert len(receiver.at(path)) == 5
        assert await dead_letters() == []


class TestExactlyOnce:
    async def test_one_job_delivered_to_several_workers_runs_once(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
        pg: asyncpg.Connection,
        database_url: str,
    ) -> None:
        path = "/slow-once"
        receiver.delay[path] = 1.5  # the first delivery still runs when the copies arrive
        owner = await new_user()
        hook = await create_webhook(client, owner, receiver.url(path), ["task.created"])
        task = await create_task(client, owner)
        job = delivery_job(hook["id"], await event_id(pg, task["id"], "task.created"))
        for _ in range(3):
            stack.worker(queues="webhooks")
        await enqueue(stack.settings(database_url), job, copies=6)

        async def settled() -> bool:
            # Each copy but the one that ran ends acknowledged as a duplicate (some after
            # a deferral, while the first worker still held the lease).
            return stack.log_text().count("already done; duplicate delivery acknowledged") >= 5

        await eventually(settled, 60, "every copy to be consumed", interval=0.5)
        await asyncio.sleep(1)
        logs = stack.log_text()
        assert logs.count("already done; duplicate delivery acknowledged") == 5, logs
        assert "leased elsewhere" in logs  # copies arrived while the job was running
        assert len(receiver.at(path)) == 1, logs
        state = await job_state(pg, job.key)
        assert state is not None and (state["status"], state["attempts"]) == ("done", 1)

    async def test_worker_killed_mid_job_is_retried_and_completes_once(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
        pg: asyncpg.Connection,
        database_url: str,
    ) -> None:
        path = "/held"
        receiver.gate[path] = threading.Event()
        owner = await new_user()
        hook = await create_webhook(client, owner, receiver.url(path), ["task.created"])
        task = await create_task(client, owner)
        job = delivery_job(hook["id"], await event_id(pg, task["id"], "task.created"))
        first = stack.worker(queues="webhooks")
        await enqueue(stack.settings(database_url), job)

        async def in_flight() -> bool:
            return len(receiver.at(path)) == 1

        await eventually(in_flight, 30, "the job to reach the receiver")
        os.killpg(first.pid, signal.SIGKILL)  # mid-job: the request is still unanswered
        first.wait(10)
        receiver.gate[path].set()
        del receiver.gate[path]
        stack.worker(queues="webhooks")

        async def done() -> bool:
            state = await job_state(pg, job.key)
            return state is not None and state["status"] == "done"

        await eventually(done, 60, "the job to complete after the restart")
        await asyncio.sleep(1)
        state = await job_state(pg, job.key)
        assert state is not None and state["attempts"] == 2, stack.log_text()
        # Two requests (the first cut off by the kill), one delivery id: the receiver's
        # idempotency key makes it one effect.
        assert len(receiver.at(path)) == 2
        assert len(_deliveries(receiver, path)) == 1
        rows = await pg.fetch(
            "SELECT d.status, a.response_status FROM webhook_delivery d "
            "JOIN webhook_attempt a ON a.delivery_id = d.id"
        )
        assert [(r["status"], r["response_status"]) for r in rows] == [("succeeded", 200)]
