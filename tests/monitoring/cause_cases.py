"""promtool cases of the cause alerts (targets, dependencies, queues, relay)."""

from __future__ import annotations

from typing import Any

from .alert_cases import (
    API,
    API_JOB,
    API_LABELS,
    KSM,
    NS,
    RELAY,
    RELAY_JOB,
    RELAY_LABELS,
    RMQ,
    WORKER_JOB,
    WORKER_LABELS,
    WORKERS,
    case,
    fired,
    gauge,
)

# CloudNativePG instances of the in-chart cluster (its PodMonitor's job).
PG = f'namespace="{NS}", job="taskhub/taskhub-pg"'

CAUSE_CASES: list[dict[str, Any]] = [
    case(
        "Every API target down",
        [
            gauge(f'up{{{API}, instance="10.0.0.1:9807"}}', 0),
            gauge(f'up{{{WORKERS}, instance="10.0.1.1:9808"}}', 1),
        ],
        "10m",
        {
            "TaskHubApiDown": [
                fired(
                    "TaskHubApiDown",
                    {**API_LABELS, "severity": "critical"},
                    f"Prometheus scrapes no API pod of job {API_JOB} in namespace {NS}: "
                    "the API is down or not discovered.",
                )
            ],
            "TaskHubTargetDown": [
                fired(
                    "TaskHubTargetDown",
                    {**API_LABELS, "instance": "10.0.0.1:9807", "severity": "warning"},
                    f"{API_JOB} target 10.0.0.1:9807 in namespace {NS} has been "
                    "unreachable for 5 minutes.",
                )
            ],
            "TaskHubWorkerTargetsAbsent": [],
        },
    ),
    case(
        "No API or worker target discovered at all",
        [gauge('up{namespace="elsewhere", job="taskhub-api", instance="x:9807"}', 1)],
        "20m",
        {
            "TaskHubApiDown": [
                fired(
                    "TaskHubApiDown",
                    {**API_LABELS, "severity": "critical"},
                    f"Prometheus scrapes no API pod of job {API_JOB} in namespace {NS}: "
                    "the API is down or not discovered.",
                )
            ],
            "TaskHubWorkerTargetsAbsent": [
                fired(
                    "TaskHubWorkerTargetsAbsent",
                    {**WORKER_LABELS, "severity": "warning"},
                    f"No worker pod of job {WORKER_JOB} in namespace {NS} is up: the workers "
                    "are gone, scaled to zero for long, or not discovered.",
                )
            ],
            "TaskHubTargetDown": [],
        },
    ),
    case(
        "One API target of two down, another job's target down",
        [
            gauge(f'up{{{API}, instance="10.0.0.1:9807"}}', 0),
            gauge(f'up{{{API}, instance="10.0.0.2:9807"}}', 1),
            gauge(f'up{{{WORKERS}, instance="10.0.1.1:9808"}}', 1),
            gauge(f'up{{namespace="{NS}", job="someone-else", instance="10.0.9.9:80"}}', 0),
        ],
        "10m",
        {"TaskHubApiDown": [], "TaskHubWorkerTargetsAbsent": []},
    ),
    case(
        "Every API pod sees the primary and Redis down, the replica lagging, rate limits open",
        [
            gauge(f'taskhub_db_up{{{API}, instance="a", node="primary"}}', 0),
            gauge(f'taskhub_db_up{{{API}, instance="b", node="primary"}}', 0),
            gauge(f'taskhub_db_up{{{API}, instance="a", node="replica"}}', 1),
            gauge(f'taskhub_db_replica_lag_bytes{{{API}, instance="a"}}', 33554432),
            gauge(f'taskhub_redis_up{{{API}, instance="a"}}', 0),
            gauge(f'taskhub_redis_up{{{API}, instance="b"}}', 0),
            {
                "series": f'taskhub_ratelimit_decisions_total{{{API}, instance="a", '
                'bucket="api", outcome="fail_open"}',
                "values": "0+120x60",
            },
        ],
        "15m",
        {
            "TaskHubDatabasePrimaryDown": [
                fired(
                    "TaskHubDatabasePrimaryDown",
                    {**API_LABELS, "severity": "critical"},
                    f"Every API pod of job {API_JOB} in namespace {NS} sees the database "
                    "primary down: writes fail.",
                )
            ],
            "TaskHubDatabaseReplicaLagging": [
                fired(
                    "TaskHubDatabaseReplicaLagging",
                    {**API_LABELS, "severity": "warning"},
                    f"The replica seen by job {API_JOB} in namespace {NS} is 32MiB of WAL "
                    "behind the primary (more than 16777216 bytes): reads go to the primary.",
                )
            ],
            "TaskHubRedisDown": [
                fired(
                    "TaskHubRedisDown",
                    {**API_LABELS, "severity": "critical"},
                    f"Every API pod of job {API_JOB} in namespace {NS} sees Redis down: rate "
                    "limits fail open and the cache is bypassed.",
                )
            ],
            "TaskHubRateLimitFailingOpen": [
                fired(
                    "TaskHubRateLimitFailingOpen",
                    {**API_LABELS, "severity": "warning"},
                    f"Job {API_JOB} in namespace {NS} lets 2 requests/s through without a "
                    "rate-limit decision (Redis unreachable).",
                )
            ],
        },
    ),
    case(
        "One API pod loses the primary and Redis; the replica keeps up; limits decided",
        [
            gauge(f'taskhub_db_up{{{API}, instance="a", node="primary"}}', 0),
            gauge(f'taskhub_db_up{{{API}, instance="b", node="primary"}}', 1),
            gauge(f'taskhub_db_up{{{API}, instance="a", node="replica"}}', 0),
            gauge(f'taskhub_db_up{{{API}, instance="b", node="replica"}}', 0),
            gauge(f'taskhub_db_replica_lag_bytes{{{API}, instance="a"}}', 1048576),
            gauge(f'taskhub_redis_up{{{API}, instance="a"}}', 0),
            gauge(f'taskhub_redis_up{{{API}, instance="b"}}', 1),
            gauge(
                f'taskhub_ratelimit_decisions_total{{{API}, instance="a", bucket="api", '
                'outcome="fail_open"}',
                7,
            ),
            {
                "series": f'taskhub_ratelimit_decisions_total{{{API}, instance="a", '
                'bucket="api", outcome="limited"}',
                "values": "0+120x60",
            },
        ],
        "15m",
        {
            "TaskHubDatabasePrimaryDown": [],
            "TaskHubDatabaseReplicaLagging": [],
            "TaskHubRedisDown": [],
            "TaskHubRateLimitFailingOpen": [],
        },
    ),
    case(
        "Dead letters and a queue nobody consumes",
        [
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="webhooks.dlq"}}', 3),
            gauge(f'rabbitmq_queue_consumers{{{RMQ}, queue="webhooks.dlq"}}', 0),
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="webhooks"}}', 50),
            gauge(f'rabbitmq_queue_consumers{{{RMQ}, queue="webhooks"}}', 0),
        ],
        "15m",
        {
            "TaskHubDeadLetterQueueNotEmpty": [
                fired(
                    "TaskHubDeadLetterQueueNotEmpty",
                    {"namespace": NS, "vhost": "/", "queue": "webhooks.dlq", "severity": "warning"},
                    f"Dead-letter queue webhooks.dlq (vhost /, namespace {NS}) holds 3 messages.",
                )
            ],
            "TaskHubQueueWithoutConsumers": [
                fired(
                    "TaskHubQueueWithoutConsumers",
                    {"namespace": NS, "vhost": "/", "queue": "webhooks", "severity": "critical"},
                    f"Queue webhooks (vhost /, namespace {NS}) holds 50 messages and no "
                    "consumer has been attached for 10 minutes.",
                )
            ],
        },
    ),
    case(
        "Empty DLQs; consumed queues; dead letters and retry delays consumed by no one",
        [
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="webhooks.dlq"}}', 0),
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="notifications"}}', 500),
            gauge(f'rabbitmq_queue_consumers{{{RMQ}, queue="notifications"}}', 2),
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="celery_delayed_3"}}', 5),
            gauge(f'rabbitmq_queue_consumers{{{RMQ}, queue="celery_delayed_3"}}', 0),
            gauge(f'rabbitmq_queue_messages{{{RMQ}, queue="maintenance"}}', 0),
            gauge(f'rabbitmq_queue_consumers{{{RMQ}, queue="maintenance"}}', 0),
            gauge('rabbitmq_queue_messages{namespace="other", vhost="/", queue="x.dlq"}', 9),
        ],
        "15m",
        {"TaskHubDeadLetterQueueNotEmpty": [], "TaskHubQueueWithoutConsumers": []},
    ),
    case(
        "A worker group without available replicas",
        [
            gauge(
                f"kube_deployment_status_replicas_available{{{KSM}, "
                'deployment="taskhub-worker-webhooks"}',
                0,
            ),
            gauge(
                f"kube_deployment_status_replicas_available{{{KSM}, "
                'deployment="taskhub-worker-notifications"}',
                2,
            ),
            gauge(
                'kube_deployment_status_replicas_available{namespace="other", '
                'job="kube-state-metrics", deployment="taskhub-worker-maintenance"}',
                0,
            ),
        ],
        "15m",
        {
            "TaskHubWorkerGroupUnavailable": [
                fired(
                    "TaskHubWorkerGroupUnavailable",
                    {
                        "namespace": NS,
                        "job": "kube-state-metrics",
                        "deployment": "taskhub-worker-webhooks",
                        "worker_group": "webhooks",
                        "severity": "critical",
                    },
                    f"Deployment taskhub-worker-webhooks in namespace {NS} (worker group "
                    "webhooks) has had no available replica for 10 minutes; its queues "
                    "webhooks are not consumed.",
                )
            ],
        },
    ),
    case(
        "Every worker group available (and another namespace's deployment down)",
        [
            *(
                gauge(
                    f"kube_deployment_status_replicas_available{{{KSM}, "
                    f'deployment="taskhub-worker-{group}"}}',
                    1,
                )
                for group in ("notifications", "webhooks", "maintenance")
            ),
            gauge(
                'kube_deployment_status_replicas_available{namespace="other", '
                'job="kube-state-metrics", deployment="taskhub-worker-webhooks"}',
                0,
            ),
        ],
        "15m",
        {"TaskHubWorkerGroupUnavailable": []},
    ),
    case(
        "The outbox's oldest pending event is 15 minutes old; the relay is up",
        [
            gauge(f'taskhub_outbox_oldest_pending_age_seconds{{{RELAY}, instance="r"}}', 900),
            gauge(f'up{{{RELAY}, instance="r"}}', 1),
        ],
        "10m",
        {
            "TaskHubOutboxLagging": [
                fired(
                    "TaskHubOutboxLagging",
                    {"namespace": NS, "severity": "critical"},
                    f"The oldest unpublished outbox event in namespace {NS} is 15m 0s old "
                    "(threshold 300 s): events and jobs are delayed.",
                )
            ],
            "TaskHubRelayDown": [],
        },
    ),
    case(
        "The outbox keeps up (another namespace's does not)",
        [
            gauge(f'taskhub_outbox_oldest_pending_age_seconds{{{RELAY}, instance="r"}}', 60),
            gauge(
                'taskhub_outbox_oldest_pending_age_seconds{namespace="other", '
                f'job="{RELAY_JOB}", instance="o"}}',
                9000,
            ),
        ],
        "10m",
        {"TaskHubOutboxLagging": []},
    ),
    case(
        "The relay target is down",
        [gauge(f'up{{{RELAY}, instance="10.0.2.1:9809"}}', 0)],
        "10m",
        {
            "TaskHubRelayDown": [
                fired(
                    "TaskHubRelayDown",
                    {**RELAY_LABELS, "severity": "critical"},
                    f"Prometheus scrapes no relay pod of job {RELAY_JOB} in namespace {NS}: "
                    "outbox events are not published (or not watched).",
                )
            ],
            "TaskHubTargetDown": [
                fired(
                    "TaskHubTargetDown",
                    {**RELAY_LABELS, "instance": "10.0.2.1:9809", "severity": "warning"},
                    f"{RELAY_JOB} target 10.0.2.1:9809 in namespace {NS} has been "
                    "unreachable for 5 minutes.",
                )
            ],
        },
    ),
    case(
        "No relay target at all",
        [gauge(f'up{{{API}, instance="10.0.0.1:9807"}}', 1)],
        "10m",
        {
            "TaskHubRelayDown": [
                fired(
                    "TaskHubRelayDown",
                    {**RELAY_LABELS, "severity": "critical"},
                    f"Prometheus scrapes no relay pod of job {RELAY_JOB} in namespace {NS}: "
                    "outbox events are not published (or not watched).",
                )
            ],
        },
    ),
    case(
        "WAL archiving fails on one instance; backups current",
        [
            gauge(f'cnpg_pg_stat_archiver_last_failed_time{{{PG}, pod="taskhub-pg-1"}}', 200),
            gauge(f'cnpg_pg_stat_archiver_last_archived_time{{{PG}, pod="taskhub-pg-1"}}', 100),
            gauge(f'cnpg_pg_stat_archiver_last_failed_time{{{PG}, pod="taskhub-pg-2"}}', 100),
            gauge(f'cnpg_pg_stat_archiver_last_archived_time{{{PG}, pod="taskhub-pg-2"}}', 200),
            # The newest backup's time keeps up with the clock: always just taken.
            {
                "series": f"cnpg_collector_last_available_backup_timestamp{{{PG}, "
                'pod="taskhub-pg-1"}',
                "values": "0+60x60",
            },
        ],
        "10m",
        {
            "TaskHubWalArchivingFailing": [
                fired(
                    "TaskHubWalArchivingFailing",
                    {"namespace": NS, "pod": "taskhub-pg-1", "severity": "critical"},
                    f"Instance taskhub-pg-1 in namespace {NS} failed to archive WAL more "
                    "recently than it last succeeded: point-in-time recovery stops at the "
                    "last archived segment, and WAL piles up on the volume.",
                )
            ],
            "TaskHubBackupTooOld": [],
        },
    ),
    case(
        "The newest base backup is 31 hours old",
        [
            gauge(
                f'cnpg_collector_last_available_backup_timestamp{{{PG}, pod="taskhub-pg-1"}}',
                1,
                minutes=1900,
            )
        ],
        "31h",
        {
            "TaskHubBackupTooOld": [
                fired(
                    "TaskHubBackupTooOld",
                    {"namespace": NS, "severity": "warning"},
                    f"The newest base backup in namespace {NS} is 1d 6h 59m 59s old (more "
                    "than 108000 s): scheduled backups are failing or suspended.",
                )
            ],
        },
    ),
    case(
        "Backups off: no backup ever (0), nothing archived or failed",
        [
            gauge(
                f'cnpg_collector_last_available_backup_timestamp{{{PG}, pod="taskhub-pg-1"}}',
                0,
                minutes=1900,
            ),
            gauge(f'cnpg_pg_stat_archiver_last_failed_time{{{PG}, pod="taskhub-pg-1"}}', 0),
            gauge(f'cnpg_pg_stat_archiver_last_archived_time{{{PG}, pod="taskhub-pg-1"}}', 0),
        ],
        "31h",
        {"TaskHubBackupTooOld": [], "TaskHubWalArchivingFailing": []},
    ),
]
