"""The request id and the trace context of the event a job came from, carried on in
the job's Celery headers: every job this process publishes gets the current request
id (``x-request-id``), and a running job has its message's request id in
``request_id_var`` (so its log lines carry it). With tracing on, Celery's
OpenTelemetry instrumentation adds ``traceparent`` on publish and runs each job in a
child span of it."""

from __future__ import annotations

from typing import Any

from celery import signals

from taskhub_api import tracing
from taskhub_api.logcontext import request_id_var
from taskhub_api.settings import Settings

REQUEST_ID = tracing.REQUEST_ID


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: the current request id (a retry keeps the job's own)."""
    request_id = request_id_var.get()
    if headers is not None and request_id and REQUEST_ID not in headers:
        headers[REQUEST_ID] = request_id


def _started(task: Any = None, **_: Any) -> None:
    """``task_prerun``: the job's request id, for its log lines and what it publishes."""
    request_id = getattr(getattr(task, "request", None), REQUEST_ID, None)
    request_id_var.set(request_id if isinstance(request_id, str) else None)


def _finished(**_: Any) -> None:
    request_id_var.set(None)


def install() -> None:
    """Connects the receivers (idempotent)."""
    signals.before_task_publish.connect(_stamp, weak=False, dispatch_uid="taskhub-request-id")
    signals.task_prerun.connect(_started, weak=False, dispatch_uid="taskhub-request-id")
    signals.task_postrun.connect(_finished, weak=False, dispatch_uid="taskhub-request-id")


def setup_tracing(settings: Settings, component: str) -> None:
    """Tracing in a process that publishes or runs jobs (after a fork: the SDK's export
    thread does not survive one)."""
    if not tracing.setup(settings.tracing.enabled, component):
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
