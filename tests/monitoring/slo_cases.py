"""promtool cases of the SLO burn-rate alerts and their recording rules."""

from __future__ import annotations

from typing import Any

from .alert_cases import (
    API,
    API_ERRORS,
    API_LABELS,
    API_SLOW,
    JOBS_DEAD,
    PROBES,
    WORKER_LABELS,
    WORKERS,
    buckets,
    burn,
    case,
    jobs,
    requests,
    slo,
)

SLO_CASES: list[dict[str, Any]] = [
    case(
        "API errors at 9 % burn both budgets",
        [requests("/tasks", "200", 100), requests("/tasks", "500", 10), *PROBES],
        "60m",
        {
            "TaskHubApiAvailabilityBudgetBurnFast": [
                slo(
                    "TaskHubApiAvailabilityBudgetBurnFast",
                    "critical",
                    burn(API_ERRORS, "9.091%", "1h or 6h", "99.9", "6"),
                    API_LABELS,
                )
            ],
            "TaskHubApiAvailabilityBudgetBurnSlow": [
                slo(
                    "TaskHubApiAvailabilityBudgetBurnSlow",
                    "warning",
                    burn(API_ERRORS, "9.091%", "1d or 3d", "99.9", "1"),
                    API_LABELS,
                )
            ],
        },
        [
            {
                "expr": "taskhub_slo:api_errors:ratio_rate5m",
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": f"taskhub_slo:api_errors:ratio_rate5m{{{API}}}", "value": 10 / 110}
                ],
            }
        ],
    ),
    case(
        "API errors at 0.5 % open a ticket but page no one",
        [requests("/tasks", "200", 995), requests("/tasks", "502", 5), *PROBES],
        "60m",
        {
            "TaskHubApiAvailabilityBudgetBurnFast": [],
            "TaskHubApiAvailabilityBudgetBurnSlow": [
                slo(
                    "TaskHubApiAvailabilityBudgetBurnSlow",
                    "warning",
                    burn(API_ERRORS, "0.5%", "1d or 3d", "99.9", "1"),
                    API_LABELS,
                )
            ],
        },
    ),
    case(
        "Failing and slow probes and scrapes are not API traffic",
        [requests("/tasks", "200", 100), *buckets("/tasks", 100, 100), *PROBES],
        "60m",
        {
            "TaskHubApiAvailabilityBudgetBurnFast": [],
            "TaskHubApiAvailabilityBudgetBurnSlow": [],
            "TaskHubApiLatencyBudgetBurnFast": [],
            "TaskHubApiLatencyBudgetBurnSlow": [],
        },
        [
            {
                "expr": "taskhub_slo:api_errors:ratio_rate1h",
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": f"taskhub_slo:api_errors:ratio_rate1h{{{API}}}", "value": 0}
                ],
            },
            {
                "expr": "taskhub_slo:api_slow_requests:ratio_rate1h",
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": f"taskhub_slo:api_slow_requests:ratio_rate1h{{{API}}}", "value": 0}
                ],
            },
        ],
    ),
    case(
        "One API request in five slower than 0.5 s",
        [*buckets("/tasks", 80, 100), *PROBES],
        "60m",
        {
            "TaskHubApiLatencyBudgetBurnFast": [
                slo(
                    "TaskHubApiLatencyBudgetBurnFast",
                    "critical",
                    burn(API_SLOW, "20%", "1h or 6h", "99", "6"),
                    API_LABELS,
                )
            ],
            "TaskHubApiLatencyBudgetBurnSlow": [
                slo(
                    "TaskHubApiLatencyBudgetBurnSlow",
                    "warning",
                    burn(API_SLOW, "20%", "1d or 3d", "99", "1"),
                    API_LABELS,
                )
            ],
        },
    ),
    case(
        "One finished job in five dead-lettered",
        [jobs("succeeded", 80), jobs("dead_lettered", 20), jobs("retried", 500)],
        "60m",
        {
            "TaskHubJobDeliveryBudgetBurnFast": [
                slo(
                    "TaskHubJobDeliveryBudgetBurnFast",
                    "critical",
                    burn(JOBS_DEAD, "20%", "1h or 6h", "99", "6"),
                    WORKER_LABELS,
                )
            ],
            "TaskHubJobDeliveryBudgetBurnSlow": [
                slo(
                    "TaskHubJobDeliveryBudgetBurnSlow",
                    "warning",
                    burn(JOBS_DEAD, "20%", "1d or 3d", "99", "1"),
                    WORKER_LABELS,
                )
            ],
        },
    ),
    case(
        "Retries, deferrals and duplicates are not failed deliveries",
        [
            jobs("succeeded", 100),
            jobs("retried", 500),
            jobs("deferred", 50),
            jobs("duplicate", 50),
        ],
        "60m",
        {"TaskHubJobDeliveryBudgetBurnFast": [], "TaskHubJobDeliveryBudgetBurnSlow": []},
        [
            {
                "expr": "taskhub_slo:jobs_dead_lettered:ratio_rate30m",
                "eval_time": "60m",
                "exp_samples": [
                    {
                        "labels": f"taskhub_slo:jobs_dead_lettered:ratio_rate30m{{{WORKERS}}}",
                        "value": 0,
                    }
                ],
            }
        ],
    ),
]
