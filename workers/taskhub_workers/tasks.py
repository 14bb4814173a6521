"""Celery task shims: names, serialisation, retries; the work is in each domain's
``jobs.py``. The Celery task id is the job key."""

from __future__ import annotations

from taskhub_api.maintenance import jobs as maintenance
from taskhub_api.notifications import jobs as notifications
from taskhub_api.webhooks import jobs as webhooks
from taskhub_workers.app import app
from taskhub_workers.base import JobTask


@app.task(name=notifications.WELCOME, base=JobTask, bind=True)
def welcome_email(self: JobTask, event_id: str) -> None:
    self.run_job(notifications.welcome_email, self.request.id, event_id=event_id)


@app.task(name=notifications.ASSIGNMENT, base=JobTask, bind=True)
def assignment_email(self: JobTask, event_id: str) -> None:
    self.run_job(notifications.assignment_email, self.request.id, event_id=event_id)


@app.task(name=webhooks.DELIVER, base=JobTask, bind=True)
def deliver_webhook(self: JobTask, delivery_id: str, webhook_id: str, event_id: str) -> None:
    self.run_job(
        webhooks.deliver,
        self.request.id,
        delivery_id=delivery_id,
        webhook_id=webhook_id,
        event_id=event_id,
    )


# Beat sends these with random task ids; the job key is the schedule slot instead.
@app.task(name=maintenance.PURGE_DELETED_TASKS, base=JobTask, bind=True)
def purge_deleted_tasks(self: JobTask) -> None:
    self.run_job(maintenance.purge_deleted_tasks, None)


@app.task(name=maintenance.EXPIRE_IDEMPOTENCY_KEYS, base=JobTask, bind=True)
def expire_idempotency_keys(self: JobTask) -> None:
    self.run_job(maintenance.expire_idempotency_keys, None)


@app.task(name=maintenance.TRIM_OUTBOX, base=JobTask, bind=True)
def trim_outbox(self: JobTask) -> None:
    self.run_job(maintenance.trim_outbox, None)
