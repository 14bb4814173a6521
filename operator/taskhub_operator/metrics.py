"""The operator's Prometheus metrics (served on TASKHUB_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "taskhub_operator_reconciles_total",
    "Reconciliations of a TaskHub, by outcome (ok, error)",
    ["namespace", "taskhub", "outcome"],
)
MIGRATION_SECONDS = Histogram(
    "taskhub_operator_migration_duration_seconds",
    "Run time of the migration Jobs (start to completion), by phase (expand, contract)",
    ["namespace", "taskhub", "phase"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
WORKER_REPLICAS = Gauge(
    "taskhub_operator_worker_replicas",
    "Replicas of a worker Deployment as last read",
    ["namespace", "taskhub", "deployment"],
)
WORKER_DESIRED = Gauge(
    "taskhub_operator_worker_desired_replicas",
    "Replicas the scaling decision wants for a worker Deployment",
    ["namespace", "taskhub", "deployment"],
)
QUEUE_MESSAGES = Gauge(
    "taskhub_operator_queue_messages",
    "Messages (ready + unacknowledged) in a worker group's queues",
    ["namespace", "taskhub", "deployment"],
)
_GROUP_GAUGES = (WORKER_REPLICAS, WORKER_DESIRED, QUEUE_MESSAGES)


def report_group(
    namespace: str,
    taskhub: str,
    deployment: str,
    *,
    replicas: int | None,
    desired: int | None,
    messages: int | None,
) -> None:
    """Set the group's gauges; a value that is not known now is removed, not kept."""
    for gauge, value in zip(_GROUP_GAUGES, (replicas, desired, messages), strict=True):
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, taskhub, deployment)
        else:
            gauge.labels(namespace, taskhub, deployment).set(value)


def forget_taskhub(namespace: str, taskhub: str) -> None:
    for gauge in _GROUP_GAUGES:
        gauge.remove_by_labels({"namespace": namespace, "taskhub": taskhub})
