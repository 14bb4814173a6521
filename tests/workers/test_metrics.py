"""The /metrics of real relay, worker and beat processes: the relay's outbox, publish and
dispatch series; the worker's ``task`` label, queue wait and duplicate outcome; beat's
scheduled sends."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
from celery import signals
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from taskhub_api.db import Database
from taskhub_api.jobs.schemas import JobRequest
from taskhub_api.maintenance.jobs import (
    EXPIRE_IDEMPOTENCY_KEYS,
    PURGE_DELETED_TASKS,
    TRIM_OUTBOX,
)
from taskhub_workers import beat_metrics, relay_metrics, topology
from tests.monitoring.metric_names import BEAT, RELAY, WORKERS, families
from tests.support.net import free_port
from tests.support.users import NewUser, create_task
from tests.support.wait import eventually
from tests.workers.conftest import Stack
from tests.workers.helpers import enqueue

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WELCOME = "notifications.welcome_email"


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class TestRelayAndWorkerMetrics:
    async def test_a_registration_shows_in_the_relay_and_worker_series(
        self, stack: Stack, client: httpx.AsyncClient
    ) -> None:
        worker_port, relay_port = free_port(), free_port()
        stack.worker(queues="notifications", metrics_port=worker_port)
        stack.relay(metrics_port=relay_port)
        registered = await client.post(
            "/api/v1/auth/register",
            json={"username": "counted", "email": "counted@example.com", "password": "pw-long-42x"},
        )
        assert registered.status_code == 201

        async def welcomed() -> Samples | None:
            samples = await scrape(worker_port)
            ran = value(samples, "taskhub_jobs_total", task=WELCOME, outcome="succeeded")
            return samples if ran == 1.0 else None

        worker = await eventually(welcomed, 30, "the welcome job in the worker's metrics")
        assert value(worker, "taskhub_job_duration_seconds_count", task=WELCOME) == 1.0
        # Stamped by the dispatcher when it published the job.
        assert value(worker, "taskhub_job_queue_wait_seconds_count", task=WELCOME) == 1.0
        assert not [key for key in worker if dict(key[1]).get("job")], "no label named job"

        relay = await scrape(relay_port)
        assert (value(relay, "taskhub_relay_published_total") or 0) >= 1
        assert value(relay, "taskhub_relay_failed_total") == 0.0
        assert (value(relay, "taskhub_relay_confirm_seconds_count") or 0) >= 1
        assert (value(relay, "taskhub_dispatcher_events_total", outcome="dispatched") or 0) >= 1
        assert value(relay, "taskhub_dispatcher_events_total", outcome="failed") == 0.0
        # Sampled at start (the outbox was empty) and every 10 s: present, and small.
        pending = value(relay, "taskhub_outbox_pending_events")
        assert pending is not None and pending <= 1
        age = value(relay, "taskhub_outbox_oldest_pending_age_seconds")
        assert age is not None and age < 60
        # The relay serves its own series only, not the worker's.
        assert not [key for key in relay if key[0].startswith("taskhub_jobs")]

        # What the rules and dashboards name (tests/monitoring/metric_names.py) is what
        # these processes really serve: a renamed metric fails here.
        for port, contract in ((worker_port, WORKERS), (relay_port, RELAY)):
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            served = {family.name for family in text_string_to_metric_families(text)}
            assert families(contract) <= served, families(contract) - served


class TestWorkerOutcomes:
    async def test_queue_wait_and_a_duplicate_turned_away_by_the_ledger(
        self, stack: Stack, database_url: str
    ) -> None:
        settings = stack.settings(database_url)
        # Maintenance jobs are keyed by their schedule slot: two sends in one slot (an
        # hour by default) are one job, the second a duplicate. Sent before any worker
        # runs, the first waits in its queue for at least the second below.
        first = JobRequest(EXPIRE_IDEMPOTENCY_KEYS, str(uuid.uuid4()))
        await enqueue(settings, first)
        await asyncio.sleep(1.0)
        port = free_port()
        stack.worker(queues="maintenance", metrics_port=port)

        async def outcome(name: str) -> Samples | None:
            samples = await scrape(port)
            counted = value(
                samples, "taskhub_jobs_total", task=EXPIRE_IDEMPOTENCY_KEYS, outcome=name
            )
            return samples if counted == 1.0 else None

        ran = await eventually(lambda: outcome("succeeded"), 30, "the first run")
        waited = value(ran, "taskhub_job_queue_wait_seconds_sum", task=EXPIRE_IDEMPOTENCY_KEYS)
        assert waited is not None and waited >= 1.0

        await enqueue(settings, JobRequest(EXPIRE_IDEMPOTENCY_KEYS, str(uuid.uuid4())))
        samples = await eventually(lambda: outcome("duplicate"), 30, "the duplicate")
        assert "already done; duplicate delivery acknowledged" in stack.log_text()
        succeeded = value(
            samples, "taskhub_jobs_total", task=EXPIRE_IDEMPOTENCY_KEYS, outcome="succeeded"
        )
        assert succeeded == 1.0


class TestOutboxSample:
    async def test_the_gauges_follow_the_unpublished_rows(
        self,
        db: Database,
        client: httpx.AsyncClient,
        new_user: NewUser,
        pg: asyncpg.Connection,
    ) -> None:
        def gauge(name: str) -> float | None:
            return relay_metrics.REGISTRY.get_sample_value(name)

        await create_task(client, await new_user())  # no relay runs: stays pending
        await asyncio.sleep(0.2)
        await relay_metrics.sample_outbox(db)
        assert gauge("taskhub_outbox_pending_events") == 1.0
        age = gauge("taskhub_outbox_oldest_pending_age_seconds")
        assert age is not None and 0.2 <= age < 30

        await pg.execute("UPDATE outbox SET published_at = now()")
        await relay_metrics.sample_outbox(db)
        assert gauge("taskhub_outbox_pending_events") == 0.0
        assert gauge("taskhub_outbox_oldest_pending_age_seconds") == 0.0


class TestBeatMetrics:
    async def test_beat_counts_each_scheduled_send(self, stack: Stack) -> None:
        # The topology a worker would declare: beat publishes to the jobs exchange.
        with Connection(stack.broker_url, connect_timeout=10) as connection:
            topology.declare(connection)
        stack.env["TASKHUB_MAINTENANCE__INTERVAL_SECONDS"] = "1"
        port = free_port()
        stack.spawn(
            "beat",
            f"--schedule-file={stack.logs / 'celerybeat-schedule'}",
            f"--metrics-port={port}",
            ready="beat: Starting",
        )
        scheduled = (PURGE_DELETED_TASKS, EXPIRE_IDEMPOTENCY_KEYS, TRIM_OUTBOX)

        async def sent_twice() -> Samples | None:
            samples = await scrape(port)
            counts = [value(samples, "taskhub_beat_sent_total", task=t) for t in scheduled]
            return samples if all((c or 0) >= 2 for c in counts) else None

        samples = await eventually(sent_twice, 30, "two sends of each schedule entry")
        now = time.time()
        for task in scheduled:
            last = value(samples, "taskhub_beat_last_sent_timestamp_seconds", task=task)
            assert last is not None and now - 30 < last <= now
        # Only the schedule's task names, and beat serves its own series only.
        tasks = {dict(key[1]).get("task") for key in samples if key[0].startswith("taskhub_beat")}
        assert tasks == set(scheduled)
        assert not [key for key in samples if key[0].startswith("taskhub_jobs")]

        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        served = {family.name for family in text_string_to_metric_families(text)}
        assert families(BEAT) <= served, families(BEAT) - served


class TestBeatSentSignal:
    def test_a_publish_counts_and_stamps_its_task(self) -> None:
        def sample(name: str) -> float | None:
            return beat_metrics.REGISTRY.get_sample_value(name, {"task": "tests.beat_probe"})

        before = sample("taskhub_beat_sent_total") or 0.0
        start = time.time()
        beat_metrics.install()
        try:
            signals.after_task_publish.send(
                sender="tests.beat_probe", headers={}, exchange="", routing_key="maintenance"
            )
        finally:
            # Only beat counts: this test process publishes jobs in other tests.
            signals.after_task_publish.disconnect(dispatch_uid=beat_metrics.DISPATCH_UID)
        assert sample("taskhub_beat_sent_total") == before + 1
        last = sample("taskhub_beat_last_sent_timestamp_seconds")
        assert last is not None and start <= last <= time.time()

    def test_a_publish_without_a_task_name_is_not_counted(self) -> None:
        before = {s.labels.get("task") for m in beat_metrics.REGISTRY.collect() for s in m.samples}
        beat_metrics.count_sent(sender=None)
        after = {s.labels.get("task") for m in beat_metrics.REGISTRY.collect() for s in m.samples}
        assert after == before
