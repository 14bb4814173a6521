"""Worker scaling from real queue depths: the operator against the API server and
the project's own RabbitMQ node with its management API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY

from tests.operator.conftest import (
    DEPLOYMENTS,
    OLD,
    SECRETS,
    TASKHUBS,
    Cluster,
    credentials_secret,
    deployment,
    taskhub,
)
from tests.support.broker import Broker
from tests.support.net import free_port
from tests.support.wait import eventually

WORKER = "taskhub-worker"
QUEUE = "notifications"


@pytest.fixture
async def vhost(managed_broker: Broker) -> AsyncIterator[tuple[str, str]]:
    """A fresh vhost: its name and its AMQP URL."""
    url = managed_broker.new_vhost()
    yield url.rsplit("/", 1)[1], url
    managed_broker.ctl("delete_vhost", url.rsplit("/", 1)[1])


async def publish(url: str, count: int, queue: str = QUEUE) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for i in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    f"job {i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=queue,
            )


async def purge(url: str, queue: str = QUEUE) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        await declared.purge()


def group(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "deployment": WORKER,
        "queues": [QUEUE],
        "minReplicas": 1,
        "maxReplicas": 10,
        "targetMessagesPerReplica": 20,
        "stabilizationWindowSeconds": 2,
        "cooldownSeconds": 1,
    }
    settings.update(overrides)
    return settings


async def install(
    cluster: Cluster,
    managed_broker: Broker,
    vhost: str,
    *,
    replicas: int = 1,
    secret: bool = True,
    management_url: str | None = None,
    **spec: Any,
) -> None:
    if secret:
        await cluster.create(SECRETS, credentials_secret())
    await cluster.create(DEPLOYMENTS, deployment(WORKER, OLD, replicas=replicas))
    rabbitmq = {
        "managementUrl": management_url or f"http://127.0.0.1:{managed_broker.management_port}",
        "credentialsSecret": "taskhub-rabbitmq-default-user",
        "vhost": vhost,
        "timeoutSeconds": 1,
    }
    body: dict[str, Any] = {
        "migrations": {"enabled": False},
        "deployments": [],
        "workers": [group()],
        "rabbitmq": rabbitmq,
    }
    body.update(spec)
    await cluster.create(TASKHUBS, taskhub(OLD, **body))


async def replicas(cluster: Cluster) -> int:
    return int((await cluster.deployment(WORKER))["spec"]["replicas"])


async def until_replicas(cluster: Cluster, wanted: int, seconds: float = 20) -> None:
    async def check() -> bool:
        return await replicas(cluster) == wanted

    try:
        await eventually(check, seconds, f"{WORKER} at {wanted} replicas")
    except AssertionError:
        raise AssertionError(
            f"{WORKER}: wanted {wanted} replicas, have {await replicas(cluster)}; "
            f"status {(await cluster.taskhub()).get('status', {}).get('workers')}"
        ) from None


async def until_scaling(cluster: Cluster, status: str, reason: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        condition = await cluster.condition("ScalingActive")
        if condition and (condition["status"], condition["reason"]) == (status, reason):
            return condition
        return None

    try:
        return await eventually(check, 20, f"ScalingActive={status} ({reason})")  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(
            f"ScalingActive: wanted {status}/{reason}, have "
            f"{await cluster.condition('ScalingActive')}"
        ) from None


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(
        name, {"namespace": "taskhub", "taskhub": "taskhub", "deployment": WORKER}
    )


class TestQueueDepth:
    async def test_scales_up_with_the_backlog_and_down_within_the_window(
        self,
        cluster: Cluster,
        operator: Any,
        managed_broker: Broker,
        vhost: tuple[str, str],
    ) -> None:
        name, url = vhost
        await publish(url, 95)
        await install(cluster, managed_broker, name)
        await until_replicas(cluster, 5)  # ceil(95 / 20), at once
        await until_scaling(cluster, "True", "QueueMetricsRead")
        worker = (await cluster.taskhub())["status"]["workers"][0]
        assert (worker["deployment"], worker["messages"], worker["desired"]) == (WORKER, 95, 5)
        assert worker["lastScaleTime"]
        assert (await cluster.taskhub())["status"]["workerReplicas"] == 5
        up = await cluster.until_events("ScaledUp")
        assert "1 → 5" in up[0]["message"] and "95 messages" in up[0]["message"]
        assert gauge("taskhub_operator_queue_messages") == 95
        assert gauge("taskhub_operator_worker_desired_replicas") == 5

        # Unacknowledged messages count: a consumer holding 30 leaves the depth at 95.
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=30)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        queue = await channel.declare_queue(QUEUE, durable=True)

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)  # never acknowledged

        await queue.consume(hold)
        await eventually(lambda: _true(len(held) == 30), 10, "30 unacknowledged messages")

        async def consumer_seen() -> bool:
            worker = (await cluster.taskhub())["status"]["workers"][0]
            return bool(worker.get("consumers") == 1)

        await eventually(consumer_seen, 10, "the consumer in status")
        worker = (await cluster.taskhub())["status"]["workers"][0]
        assert worker["messages"] == 95
        assert await replicas(cluster) == 5
        await connection.close()

        # Drained: down one step (25 %, at least 1) per cooldown, never below min.
        await purge(url)
        drained = time.monotonic()
        seen = [5]
        first_drop: float | None = None
        deadline = drained + 30
        while seen[-1] != 1 and time.monotonic() < deadline:
            count = await replicas(cluster)
            if count != seen[-1]:
                seen.append(count)
                first_drop = first_drop or time.monotonic() - drained
            await asyncio.sleep(0.1)
        assert seen == [5, 4, 3, 2, 1]
        assert first_drop is not None and first_drop >= 1.5  # the 2 s window held it
        down = await cluster.until_events("ScaledDown", 4)
        assert [e["message"].split(" replicas")[0] for e in down] == [
            f"{WORKER}: {a} → {a - 1}" for a in (5, 4, 3, 2)
        ]
        await asyncio.sleep(1.5)
        assert await replicas(cluster) == 1

    async def test_clamps_and_activation(
        self,
        cluster: Cluster,
        operator: Any,
        managed_broker: Broker,
        vhost: tuple[str, str],
    ) -> None:
        name, url = vhost
        await publish(url, 5)
        await install(
            cluster,
            managed_broker,
            name,
            replicas=4,
            workers=[group(minReplicas=2, maxReplicas=3, activationMessages=10)],
        )
        await until_replicas(cluster, 3)  # above max: clamped at once
        await until_replicas(cluster, 2)  # 5 messages, below activation: min
        await publish(url, 200)
        await until_replicas(cluster, 3)  # ceil(205 / 20) = 11, clamped to max
        assert (await cluster.taskhub())["status"]["workers"][0]["desired"] == 3

    async def test_paused_reports_and_does_not_scale(
        self,
        cluster: Cluster,
        operator: Any,
        managed_broker: Broker,
        vhost: tuple[str, str],
    ) -> None:
        name, url = vhost
        await publish(url, 95)
        await install(cluster, managed_broker, name, paused=True)
        await until_scaling(cluster, "False", "Paused")

        async def desired() -> bool:
            workers = (await cluster.taskhub()).get("status", {}).get("workers") or [{}]
            return bool(workers[0].get("desired") == 5)

        await eventually(desired, 10, "desired 5 in status")
        assert await replicas(cluster) == 1
        assert await cluster.events("ScaledUp") == []


class TestManagementApiFailures:
    async def test_a_stopped_broker_holds_the_count_until_it_is_back(
        self,
        cluster: Cluster,
        operator: Any,
        managed_broker: Broker,
        vhost: tuple[str, str],
    ) -> None:
        name, url = vhost
        await publish(url, 60)
        await install(cluster, managed_broker, name)
        await until_replicas(cluster, 3)
        managed_broker.stop()
        try:
            down = await until_scaling(cluster, "False", "ManagementApiUnreachable")
            assert "holding 3 replicas" in down["message"]
            assert gauge("taskhub_operator_queue_messages") is None  # unknown, not stale
            assert gauge("taskhub_operator_worker_replicas") == 3
            await asyncio.sleep(1)
            assert await replicas(cluster) == 3
        finally:
            managed_broker.start()
        await until_scaling(cluster, "True", "QueueMetricsRead")

        async def recovered() -> bool:  # persistent messages in a durable queue
            worker = (await cluster.taskhub())["status"]["workers"][0]
            return bool(worker["messages"] == 60)

        await eventually(recovered, 20, "the 60 messages back in status")
        # A brief zero while the node recovered its queue was held by the window.
        assert await replicas(cluster) == 3

    async def test_a_management_api_that_does_not_answer_times_out(
        self,
        cluster: Cluster,
        operator: Any,
        managed_broker: Broker,
        vhost: tuple[str, str],
    ) -> None:
        silent: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)  # never answers

        port = free_port()
        server = await asyncio.start_server(accept, "127.0.0.1", port)
        try:
            await install(
                cluster,
                managed_broker,
                vhost[0],
                replicas=2,
                management_url=f"http://127.0.0.1:{port}",
            )
            timed_out = await until_scaling(cluster, "False", "ManagementApiTimeout")
            assert "no answer within 1s" in timed_out["message"]
            assert await replicas(cluster) == 2
        finally:
            server.close()
            for writer in silent:
                writer.close()

    async def test_a_missing_secret_is_a_condition(
        self, cluster: Cluster, operator: Any, managed_broker: Broker, vhost: tuple[str, str]
    ) -> None:
        await publish(vhost[1], 0)  # the queue exists (workers declare it)
        await install(cluster, managed_broker, vhost[0], secret=False)
        missing = await until_scaling(cluster, "False", "CredentialsSecretNotFound")
        assert "taskhub-rabbitmq-default-user" in missing["message"]
        await cluster.create(SECRETS, credentials_secret())
        await until_scaling(cluster, "True", "QueueMetricsRead")

    async def test_wrong_credentials_and_unknown_queues_are_conditions(
        self, cluster: Cluster, operator: Any, managed_broker: Broker, vhost: tuple[str, str]
    ) -> None:
        secret = credentials_secret()
        secret["data"]["password"] = "d3Jvbmc="  # "wrong"
        await cluster.create(SECRETS, secret)
        await install(
            cluster,
            managed_broker,
            vhost[0],
            secret=False,
            workers=[group(queues=["no-such-queue"])],
        )
        await until_scaling(cluster, "False", "ManagementApiUnauthorized")
        await cluster.patch(
            f"{SECRETS}/taskhub-rabbitmq-default-user", {"data": credentials_secret()["data"]}
        )
        unknown = await until_scaling(cluster, "False", "QueueNotFound")
        assert "no-such-queue" in unknown["message"]

    async def test_a_missing_worker_deployment_is_a_condition(
        self, cluster: Cluster, operator: Any, managed_broker: Broker, vhost: tuple[str, str]
    ) -> None:
        await publish(vhost[1], 40)
        await install(
            cluster, managed_broker, vhost[0], workers=[group(), group(deployment="ghost")]
        )
        missing = await until_scaling(cluster, "False", "DeploymentNotFound")
        assert "ghost" in missing["message"]
        await until_replicas(cluster, 2)  # the other group still scales


async def _true(value: bool) -> bool:
    return value
