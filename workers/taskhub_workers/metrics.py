"""Prometheus metrics of the worker, served on ``/metrics`` (default port 9808).

Pool processes write to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``taskhub worker`` before
anything imports prometheus_client); the main process serves their sum.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

log = logging.getLogger("taskhub.worker")

# The label is ``task`` (the Celery task name), not ``job``: Prometheus sets ``job`` on
# every scraped series itself (the scrape job), and the target's label would be renamed
# ``exported_job``.
JOBS = Counter(
    "taskhub_jobs_total",
    "Job executions by outcome (succeeded, retried, deferred, dead_lettered, duplicate)",
    ["task", "outcome"],
)
JOB_DURATION = Histogram(
    "taskhub_job_duration_seconds",
    "Job run time",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# From publish (or, for a delayed retry, the time it was due) to the start of the job:
# quorum queues report no age of their head message, so the message carries the time.
JOB_QUEUE_WAIT = Histogram(
    "taskhub_job_queue_wait_seconds",
    "Time a job waited in its queue before it started",
    ["task"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def serve(port: int) -> None:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)
    log.info("worker metrics on :%s/metrics", port)
