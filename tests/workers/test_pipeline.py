"""End to end through the API, the outbox relay, the dispatcher and a worker: signed
webhooks, mail, and who receives what."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson

from taskhub_api.notifications.email import message_id
from tests.support.net import free_port
from tests.support.users import NewUser, create_task
from tests.support.wait import eventually
from tests.workers.conftest import MailSink, Receiver, Stack
from tests.workers.helpers import create_webhook


async def _ready(value: bool) -> bool:
    return value


class TestWebhookDelivery:
    async def test_deliveries_are_signed_with_the_documented_algorithm(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
    ) -> None:
        path = "/signed"
        owner = await new_user()
        secret = "a-shared-secret-of-the-receiver"
        hook = await create_webhook(
            client, owner, receiver.url(path), ["task.created", "task.updated"], secret=secret
        )
        assert hook["secret"] == secret
        stack.worker(queues="webhooks")
        stack.relay()
        task = await create_task(client, owner, title="Sign me")

        await eventually(lambda: _ready(len(receiver.at(path)) == 1), 30, "the delivery")
        (request,) = receiver.at(path)
        # The receiver's side of docs/async.md: HMAC-SHA256 over "<t>.<raw body>".
        fields = dict(
            part.split("=", 1) for part in request.headers["X-TaskHub-Signature"].split(",")
        )
        expected = hmac.new(
            secret.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected)
        assert abs(int(fields["t"]) - time.time()) < 60
        tampered = hmac.new(
            secret.encode(), fields["t"].encode() + b"." + request.body + b" ", hashlib.sha256
        ).hexdigest()
        assert fields["v1"] != tampered
        body = orjson.loads(request.body)
        assert request.headers["X-TaskHub-Event"] == body["type"] == "task.created"
        assert body["payload"]["task"]["id"] == task["id"]
        assert request.headers["Content-Type"] == "application/json"

        # The worker records the outcome after the receiver has answered.
        async def delivered() -> dict[str, Any] | None:
            log = await client.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries", headers=owner.headers
            )
            (item,) = log.json()["items"]
            return item if item["status"] != "pending" else None

        delivery = await eventually(delivered, 10, "the delivery's outcome")
        assert delivery["id"] == request.headers["X-TaskHub-Delivery"]
        assert delivery["status"] == "succeeded"
        assert [a["response_status"] for a in delivery["attempts"]] == [200]

        # A manual redelivery is a new delivery (new id) of the same event.
        again = await client.post(
            f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver",
            headers=owner.headers,
        )
        assert again.status_code == 202
        await eventually(lambda: _ready(len(receiver.at(path)) == 2), 30, "the redelivery")
        second = receiver.at(path)[1]
        assert second.headers["X-TaskHub-Delivery"] == again.json()["id"] != delivery["id"]
        assert orjson.loads(second.body)["id"] == body["id"]

    async def test_events_reach_only_webhooks_whose_owner_may_read_the_task(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
    ) -> None:
        owner, stranger, assignee, admin = (
            await new_user(),
            await new_user(),
            await new_user(),
            await new_user("admin"),
        )
        for user, path in ((owner, "/o"), (stranger, "/s"), (assignee, "/a"), (admin, "/adm")):
            await create_webhook(client, user, receiver.url(path), ["task.created"])
        stack.worker(queues="webhooks")
        stack.relay()
        await create_task(client, owner, assignee_id=str(assignee.id))

        async def delivered() -> bool:
            return all(len(receiver.at(p)) == 1 for p in ("/o", "/a", "/adm"))

        await eventually(delivered, 30, "deliveries to the owner, assignee and admin")
        # The dispatcher made three jobs of the event: none for the stranger.
        assert "(task.created): 3 jobs" in stack.log_text()
        assert receiver.at("/s") == []


class TestMail:
    async def test_registration_and_assignment_send_one_mail_each(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        smtp: tuple[MailSink, int],
        pg: asyncpg.Connection,
    ) -> None:
        sink, _ = smtp
        metrics_port = free_port()
        stack.worker(queues="notifications", metrics_port=metrics_port)
        stack.relay()
        registered = await client.post(
            "/api/v1/auth/register",
            json={
                "username": "newcomer",
                "email": "newcomer@example.com",
                "password": "pw-long-42x",
            },
        )
        assert registered.status_code == 201
        owner = await new_user()
        assignee = await new_user()
        task = await create_task(client, owner, title="Review the plan")
        # The API refuses control characters in titles now; a row stored before that
        # still must not break the mail's headers.
        await pg.execute(
            "UPDATE task SET title = $1 WHERE id = $2", "Review\nthe plan", uuid.UUID(task["id"])
        )
        patch = await client.patch(
            f"/api/v1/tasks/{task['id']}",
            json={"assignee_id": str(assignee.id)},
            headers=owner.headers,
        )
        assert patch.status_code == 200

        await eventually(
            lambda: _ready(bool(sink.to("newcomer@example.com")) and bool(sink.to(assignee.email))),
            30,
            "both mails",
        )
        (welcome,) = sink.to("newcomer@example.com")
        assert welcome["Subject"] == "Welcome to TaskHub"
        event = await pg.fetchval("SELECT id FROM event WHERE type = 'user.registered'")
        assert welcome["Message-ID"] == message_id(
            f"notifications.welcome_email:{event}", "taskhub@taskhub.local"
        )
        (notice,) = sink.to(assignee.email)
        assert notice["Subject"] == "Assigned to you: Review the plan"
        assert task["id"] in notice.get_payload()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert (
            # The worker's multiprocess collector sorts the labels by name.
            'taskhub_jobs_total{outcome="succeeded",task="notifications.welcome_email"} 1.0'
            in metrics
        )
