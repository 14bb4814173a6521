"""Prometheus metrics of the worker, served on ``/metrics`` (default port 9808).

Pool processes write to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``taskhub worker`` before
anything imports prometheus_client); the main process serves their sum.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

log = logging.getLogger("taskhub.worker")

JOBS = Counter(
    "taskhub_jobs_total",
    "Job executions by outcome (succeeded, retried, deferred, dead_lettered)",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "taskhub_job_duration_seconds",
    "Job run time",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def serve(port: int) -> None:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)
    log.info("worker metrics on :%s/metrics", port)
