"""One trace from request to job: the request id and the W3C trace context travel from
the API request through the outbox row, the relay's message headers, the dispatcher and
the Celery job, and the log lines of each step carry them (docs/async.md, "Tracing")."""

from __future__ import annotations

import secrets
from typing import Any

import aio_pika
import httpx

from taskhub_workers import topology
from tests.support.users import NewUser
from tests.support.wait import eventually
from tests.workers.conftest import Receiver, Stack
from tests.workers.helpers import create_webhook

# On in the started processes, exported to their stdout: no network.
TRACING_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "TASKHUB_LOG_JSON": "true",
}


def header(received: Any, name: str) -> str | None:
    return next((v for k, v in received.headers.items() if k.lower() == name), None)


async def job_line(stack: Stack, request_id: str) -> dict[str, Any] | None:
    """The webhook job's own log line (written once it finished) for the request."""
    return next(
        (
            line
            for line in stack.log_lines("worker")
            if line["logger"] == "taskhub.worker"
            and line["message"].startswith("webhooks.deliver[")
            and "succeeded" in line["message"]
            and line.get("request_id") == request_id
        ),
        None,
    )


class TestTracingOn:
    async def test_the_job_log_line_carries_the_request_id_and_trace_of_the_request(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
        redis_url: str,
    ) -> None:
        path = "/traced"
        owner = await new_user()
        await create_webhook(client, owner, receiver.url(path), ["task.created"])
        stack.env.update(TRACING_ENV)
        api = stack.api(redis_url)
        stack.worker(queues="webhooks")
        stack.relay()
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        request_id = f"trace-test-{secrets.token_hex(4)}"
        async with httpx.AsyncClient(base_url=api) as http:
            created = await http.post(
                "/api/v1/tasks",
                json={"title": "Traced"},
                headers={
                    **owner.headers,
                    "X-Request-ID": request_id,
                    "traceparent": f"00-{trace_id}-{parent_id}-01",
                },
            )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == request_id

        line = await eventually(lambda: job_line(stack, request_id), 30, "the job's log line")
        assert line["trace_id"] == trace_id, stack.log_text()[-5000:]
        assert line["span_id"] not in (parent_id, "0" * 16)  # a span of the worker's own

        # Every step on the way logged the same request id and trace.
        (access,) = [
            entry
            for entry in stack.log_lines("api")
            if entry["logger"] == "taskhub.access" and entry["message"].startswith("POST ")
        ]
        assert (access["request_id"], access["trace_id"]) == (request_id, trace_id)
        (dispatched,) = [
            entry
            for entry in stack.log_lines("relay")
            if entry["logger"] == "taskhub.dispatcher" and "(task.created)" in entry["message"]
        ]
        assert (dispatched["request_id"], dispatched["trace_id"]) == (request_id, trace_id)
        # The worker's outbound HTTP call continues the trace too (httpx instrumentation).
        (delivery,) = receiver.at(path)
        traceparent = header(delivery, "traceparent")
        assert traceparent is not None
        assert traceparent.split("-")[1] == trace_id


class TestTracingOff:
    async def test_no_traceparent_in_the_headers_and_the_request_id_still_carried(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        new_user: NewUser,
        receiver: Receiver,
    ) -> None:
        path = "/untraced"
        owner = await new_user()
        await create_webhook(client, owner, receiver.url(path), ["task.created"])
        stack.env["TASKHUB_LOG_JSON"] = "true"
        stack.relay()  # declares the events exchange
        connection = await aio_pika.connect(stack.broker_url)
        try:
            channel = await connection.channel()
            # A queue of the test's own next to the dispatcher's: what the relay publishes.
            tap = await channel.declare_queue("", exclusive=True)
            await tap.bind(topology.EVENTS_EXCHANGE, routing_key="#")
            stack.worker(queues="webhooks")
            request_id = f"untraced-{secrets.token_hex(4)}"
            # The tests' in-process API runs with tracing off; the client's traceparent
            # goes nowhere.
            created = await client.post(
                "/api/v1/tasks",
                json={"title": "Untraced"},
                headers={
                    **owner.headers,
                    "X-Request-ID": request_id,
                    "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
                },
            )
            assert created.status_code == 201, created.text

            async def published() -> aio_pika.abc.AbstractIncomingMessage | None:
                return await tap.get(no_ack=True, fail=False)

            message = await eventually(published, 30, "the relay's message")
        finally:
            await connection.close()
        assert message.headers["x-request-id"] == request_id
        assert "traceparent" not in message.headers

        line = await eventually(lambda: job_line(stack, request_id), 30, "the job's log line")
        assert "trace_id" not in line
        (delivery,) = receiver.at(path)
        assert header(delivery, "traceparent") is None
