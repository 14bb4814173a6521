"""The metric names that rules and dashboards may use: the metrics contract.

One frozenset per exporter, each saying where the series come from. Rules and
dashboards that name anything else fail tests/monitoring/test_promql_names.py.
A later check compares the TaskHub groups against a real scrape.
"""

from __future__ import annotations

# The API (taskhub_api, /metrics on port 9807, `taskhub api --metrics-port`, never on
# the API's port 8000; job = the API Service's name).
API = frozenset(
    {
        "taskhub_http_requests_total",
        "taskhub_http_request_duration_seconds_bucket",
        "taskhub_http_request_duration_seconds_sum",
        "taskhub_http_request_duration_seconds_count",
        "taskhub_ratelimit_decisions_total",
        "taskhub_redis_up",
        "taskhub_redis_errors_total",
        "taskhub_db_up",
        "taskhub_db_replica_lag_bytes",
        "taskhub_db_reads_total",
        "taskhub_cache_requests_total",
        "taskhub_db_pool_checked_out",
        "taskhub_db_pool_wait_seconds_bucket",
        "taskhub_db_pool_wait_seconds_sum",
        "taskhub_db_pool_wait_seconds_count",
    }
)

# The Celery workers (taskhub_workers, port 9808; job = <fullname>-worker-metrics).
WORKERS = frozenset(
    {
        "taskhub_jobs_total",
        "taskhub_job_duration_seconds_bucket",
        "taskhub_job_duration_seconds_sum",
        "taskhub_job_duration_seconds_count",
        "taskhub_job_queue_wait_seconds_bucket",
        "taskhub_job_queue_wait_seconds_sum",
        "taskhub_job_queue_wait_seconds_count",
    }
)

# The outbox relay and the event dispatcher (taskhub_workers.relay).
RELAY = frozenset(
    {
        "taskhub_outbox_pending_events",
        "taskhub_outbox_oldest_pending_age_seconds",
        "taskhub_relay_published_total",
        "taskhub_relay_failed_total",
        "taskhub_relay_confirm_seconds_bucket",
        "taskhub_relay_confirm_seconds_sum",
        "taskhub_relay_confirm_seconds_count",
        "taskhub_dispatcher_events_total",
    }
)

# Celery beat (taskhub_workers.beat_metrics, port 9810; job = <fullname>-beat-metrics).
BEAT = frozenset(
    {
        "taskhub_beat_sent_total",
        "taskhub_beat_last_sent_timestamp_seconds",
    }
)

# The kopf operator (taskhub_operator, port 8080; docs/operator.md).
OPERATOR = frozenset(
    {
        "taskhub_operator_reconciles_total",
        "taskhub_operator_worker_replicas",
    }
)

# RabbitMQ's built-in exporter, per-object endpoint (/metrics/per-object, port 15692).
RABBITMQ = frozenset(
    {
        "rabbitmq_queue_messages",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_consumers",
    }
)

# kube-state-metrics (cluster-wide, from the monitoring stack).
KUBE_STATE_METRICS = frozenset({"kube_deployment_status_replicas_available"})

# CloudNativePG instances (PodMonitor, port 9187).
# (cnpg_pgbouncer_*: the Poolers' PgBouncer pods, metrics port 9127.)
CNPG = frozenset(
    {
        "cnpg_collector_up",
        "cnpg_collector_last_available_backup_timestamp",
        "cnpg_pg_replication_lag",
        "cnpg_pg_stat_archiver_last_archived_time",
        "cnpg_pg_stat_archiver_last_failed_time",
        "cnpg_pgbouncer_pools_cl_waiting",
    }
)

# Prometheus itself: `up` per scrape target, ALERTS per pending or firing alert.
PROMETHEUS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

ALL = API | WORKERS | RELAY | BEAT | OPERATOR | RABBITMQ | KUBE_STATE_METRICS | CNPG | PROMETHEUS


def families(names: frozenset[str]) -> set[str]:
    """The metric families of sample names (a histogram's _bucket, _sum and _count are
    one family; prometheus_client's parser names a counter without _total)."""
    result = set()
    for name in names:
        for suffix in ("_bucket", "_sum", "_count", "_total"):
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        result.add(name)
    return result
