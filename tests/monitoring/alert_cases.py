"""Builders of promtool unit-test cases for the chart's alerts (default values,
release and namespace "taskhub"): input series, and the alerts expected with
their exact labels and rendered annotations. The cases are in slo_cases.py and
cause_cases.py."""

from __future__ import annotations

from typing import Any

from .monitoring_helpers import API_JOB, RELAY_JOB, WORKER_JOB, alerts, default_groups

NS = "taskhub"
RUNBOOK_URL = "https://github.com/taskhub/taskhub/blob/main/docs/runbook.md"
API = f'namespace="{NS}", job="{API_JOB}"'
WORKERS = f'namespace="{NS}", job="{WORKER_JOB}"'
RMQ = f'namespace="{NS}", job="taskhub-rabbitmq", vhost="/"'
KSM = f'namespace="{NS}", job="kube-state-metrics"'
RELAY = f'namespace="{NS}", job="{RELAY_JOB}"'


def requests(route: str, status: str, per_minute: int, minutes: int = 240) -> dict[str, str]:
    return {
        "series": f'taskhub_http_requests_total{{{API}, method="GET", route="{route}", '
        f'status="{status}"}}',
        "values": f"0+{per_minute}x{minutes}",
    }


def buckets(route: str, fast: int, total: int, minutes: int = 240) -> list[dict[str, str]]:
    base = f'taskhub_http_request_duration_seconds_bucket{{{API}, method="GET", route="{route}"'
    return [
        {"series": f'{base}, le="0.5"}}', "values": f"0+{fast}x{minutes}"},
        {"series": f'{base}, le="+Inf"}}', "values": f"0+{total}x{minutes}"},
    ]


def jobs(outcome: str, per_minute: int, minutes: int = 240) -> dict[str, str]:
    return {
        "series": f'taskhub_jobs_total{{{WORKERS}, worker_group="webhooks", '
        f'task="webhooks.deliver", outcome="{outcome}"}}',
        "values": f"0+{per_minute}x{minutes}",
    }


def gauge(series: str, value: float | int, minutes: int = 60) -> dict[str, str]:
    return {"series": series, "values": f"{value}x{minutes}"}


def fired(alert: str, labels: dict[str, str], description: str) -> dict[str, Any]:
    summaries = {a["alert"]: a["annotations"]["summary"] for a in alerts(default_groups())}
    return {
        "exp_labels": labels,
        "exp_annotations": {
            "summary": summaries[alert],
            "description": description,
            "runbook_url": f"{RUNBOOK_URL}#{alert.lower()}",
        },
    }


def burn(what: str, value: str, windows: str, objective: str, factor: str) -> str:
    return (
        f"{value} {what} in namespace {NS} (job {{job}}) over the last {windows}: the "
        f"{objective}% objective's error budget burns at {factor}x the sustainable rate "
        "or faster."
    )


API_ERRORS = "of API requests (probes and scrapes excluded) answered 5xx"
API_SLOW = "of API requests (probes and scrapes excluded) took longer than 0.5 s"
JOBS_DEAD = "of finished jobs were dead-lettered"
API_LABELS = {"namespace": NS, "job": API_JOB}
WORKER_LABELS = {"namespace": NS, "job": WORKER_JOB}
RELAY_LABELS = {"namespace": NS, "job": RELAY_JOB}


def case(
    name: str,
    series: list[dict[str, str]],
    at: str,
    expected: dict[str, list[dict[str, Any]]],
    exprs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One promtool test group: input series, then for each alert the alerts
    expected at `at` (an empty list: must not fire)."""
    return {
        "name": name,
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": alert, "exp_alerts": exp}
            for alert, exp in expected.items()
        ],
        "promql_expr_test": exprs or [],
    }


def slo(alert: str, severity: str, description: str, labels: dict[str, str]) -> dict[str, Any]:
    return fired(
        alert, {**labels, "severity": severity}, description.replace("{job}", labels["job"])
    )


# Probes and scrapes: heavy, failing (/health/ready answers 503 while not ready)
# and slow; every SLI must ignore them.
PROBES = [
    requests("/health/ready", "503", 5000),
    requests("/health/live", "500", 5000),
    requests("/health", "503", 5000),
    requests("/metrics", "500", 5000),
    *buckets("/health/ready", 0, 5000),
    *buckets("/metrics", 0, 5000),
]
