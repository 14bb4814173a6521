"""The Celery application: broker, queues, delivery guarantees, beat schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from taskhub_api.maintenance.jobs import (
    EXPIRE_IDEMPOTENCY_KEYS,
    PURGE_DELETED_TASKS,
    TRIM_OUTBOX,
)
from taskhub_api.settings import Settings, get_settings
from taskhub_workers import propagation, queuewait, topology


def configure(app: Celery, settings: Settings) -> None:
    interval = settings.maintenance.interval_seconds
    app.conf.update(
        broker_url=settings.broker.url,
        # Publisher confirms: send_task returns once the broker has the message.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=[topology.job_queue(name) for name in topology.JOB_QUEUES],
        task_default_queue="maintenance",
        task_default_exchange=topology.JOBS_EXCHANGE,
        task_default_exchange_type="topic",
        task_routes={f"{name}.*": {"queue": name} for name in topology.JOB_QUEUES},
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # Acknowledge after the job ran; a lost worker's message is redelivered; a job
        # failing outside our retry handling is rejected, i.e. dead-lettered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_native_delayed_delivery_queue_type="quorum",
        beat_schedule={
            name: {"task": name, "schedule": interval}
            for name in (PURGE_DELETED_TASKS, EXPIRE_IDEMPOTENCY_KEYS, TRIM_OUTBOX)
        },
    )


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery("taskhub", include=["taskhub_workers.tasks"], set_as_current=True)
    configure(app, settings or get_settings())
    return app


app = create_app()
# Every publisher of jobs (dispatcher, beat, retries) stamps when the job became due.
queuewait.install()
# ... and carries on the request id of the event it came from.
propagation.install()


def enqueue(name: str, key: str, kwargs: dict[str, Any]) -> None:
    """Publishes a job (blocking until the broker confirms). The job key is the Celery
    task id, so duplicates are recognisable on the wire as in the ledger."""
    app.send_task(name, kwargs=kwargs, task_id=key)


class _ShutdownTick(bootsteps.StartStopStep):
    """Wakes the worker's event loop every second. A signal only sets a flag that the
    loop reads when its poll returns; with no timer due, a warm shutdown (Ctrl-C,
    SIGTERM) would otherwise wait for the next broker event."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        if worker.hub is not None:
            worker.hub.call_repeatedly(1.0, _tick)


def _tick() -> None:
    pass


app.steps["worker"].add(_ShutdownTick)
