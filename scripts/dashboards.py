"""Generates TaskHub's Grafana dashboards (charts/taskhub/dashboards/*.json).

Plain dicts written as sorted, indented JSON, so the output is byte-stable and the
committed files can be checked against a fresh run (tests/charts/test_chart_dashboards.py).
Metric names are the application's contract (docs/deployment.md, "Metrics contract").

    .venv/bin/python scripts/dashboards.py [--output DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "charts" / "taskhub" / "dashboards"
# Grafana 10.4 and 11 write this version; newer ones migrate it on load.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
NS = 'namespace="$namespace"'
# Probes and scrapes are not user traffic: excluded from every API SLI.
API = f'{NS}, route!~"/health.*|/metrics"'
# Work queues: neither dead-letter queues nor Celery's delayed-delivery queues.
WORK_QUEUES = f'{NS}, queue!~".+[.]dlq|celery.*"'
DLQS = f'{NS}, queue=~".+[.]dlq"'
HTTP = "taskhub_http_requests_total"
HTTP_SECONDS = "taskhub_http_request_duration_seconds_bucket"
JOBS = "taskhub_jobs_total"
FIVE_XX = 'status=~"5.."'
DEAD = 'outcome="dead_lettered"'
# The job delivery SLI's events: a retried or deferred job is not done yet.
DELIVERED = 'outcome=~"succeeded|dead_lettered"'
# SLO windows are subqueries over `$__rate_interval` rates at this step. The SLO
# panels' minimum interval is the same, so $__rate_interval (at least the interval
# plus a scrape) is longer than the step: consecutive rate windows overlap and no
# request falls between them.
SLO_STEP = "5m"
BURN_WINDOWS = ("1h", "6h", "1d", "3d")
Thresholds = list[tuple[float | None, str]]
UP: dict[str, Any] = {
    "thresholds": [(None, "red"), (1, "green")],
    "mappings": [
        {"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0}}},
        {"type": "value", "options": {"1": {"text": "up", "color": "green", "index": 1}}},
    ],
}


# -- PromQL -------------------------------------------------------------------


def rate(metric: str, selector: str = NS, *matchers: str) -> str:
    return f"rate({metric}{{{', '.join((selector, *matchers))}}}[{RI}])"


def sum_rate(metric: str, selector: str = NS, *matchers: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}({rate(metric, selector, *matchers)})"


def quantile(q: float, metric: str, selector: str = NS, by: str = "") -> str:
    grouping = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({grouping}) ({rate(metric, selector)}))"


def window(expr: str, length: str) -> str:
    """The sum of a rate expression over a trailing window, as a subquery."""
    return f"sum_over_time(({expr})[{length}:{SLO_STEP}])"


ALL, FAST = 'le="+Inf"', 'le="0.5"'
# name: (objective, bad events per second, all events per second)
SLOS = {
    "Availability": (0.999, sum_rate(HTTP, API, FIVE_XX), sum_rate(HTTP, API)),
    "Latency": (
        0.99,
        # Slow: all requests minus those within 0.5 s.
        f"({sum_rate(HTTP_SECONDS, API, ALL)} - {sum_rate(HTTP_SECONDS, API, FAST)})",
        sum_rate(HTTP_SECONDS, API, ALL),
    ),
    "Job delivery": (0.99, sum_rate(JOBS, NS, DEAD), sum_rate(JOBS, NS, DELIVERED)),
}


# -- Panels -------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
    if instant:
        found |= {"instant": True, "range": False, "format": "table"}
    return found


def panel(
    kind: str,
    title: str,
    unit: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 8,
    h: int = 8,
    thresholds: Thresholds | None = None,
    mappings: list[dict[str, Any]] | None = None,
    bounded: bool = True,
    decimals: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One panel; `dashboard()` fills in its id, grid position and refIds."""
    steps = [{"color": c, "value": v} for v, c in thresholds or [(None, "green")]]
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    options: dict[str, Any] = {}
    if kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never", "spanNulls": False}
        if thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
        if bounded and unit == "percentunit":
            defaults |= {"min": 0, "max": 1}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": targets,
        "gridPos": {"w": w, "h": h},
        "options": options,
        **extra,
    }


def ts(title: str, unit: str, description: str, *targets: Any, **kw: Any) -> dict[str, Any]:
    """A time series panel; each target is a `target()` or an (expr, legend) pair."""
    built = [t if isinstance(t, dict) else target(*t) for t in targets]
    return panel("timeseries", title, unit, description, built, **kw)


def stat(title: str, unit: str, description: str, expr: str, **kw: Any) -> dict[str, Any]:
    return panel("stat", title, unit, description, [target(expr)], w=kw.pop("w", 6), **kw)


def quantiles(metric: str, selector: str, by: str, what: str) -> list[dict[str, Any]]:
    """p50, p95 and p99 panels of one histogram, a series per `by`."""
    return [
        ts(
            f"{what} p{round(q * 100)} by {by}",
            "s",
            f"{round(q * 100)}th percentile of {what.lower()}, per {by}.",
            (quantile(q, metric, selector, by), f"{{{{{by}}}}}"),
        )
        for q in (0.5, 0.95, 0.99)
    ]


# -- Dashboards ---------------------------------------------------------------

ANNOTATIONS = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}
LINKS = {
    "title": "TaskHub",
    "type": "dashboards",
    "tags": ["taskhub"],
    "asDropdown": True,
    "includeVars": True,
    "keepTime": True,
}
NAMESPACES = f"label_values({HTTP}, namespace)"
VARIABLES = [
    {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    },
    {
        "name": "namespace",
        "label": "Namespace",
        "type": "query",
        "datasource": DATASOURCE,
        "definition": NAMESPACES,
        "query": {
            "qryType": 1,
            "query": NAMESPACES,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "current": {},
        "hide": 0,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "options": [],
    },
]


def dashboard(uid: str, title: str, description: str, panels: list[Any]) -> dict[str, Any]:
    """Lays panels out left to right in rows of 24 columns; ids follow that order."""
    x = y = row_h = 0
    for index, item in enumerate(panels, start=1):
        pos = item["gridPos"]
        if x + pos["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        pos |= {"x": x, "y": y}
        x, row_h = x + pos["w"], max(row_h, pos["h"])
        item["id"] = index
        for ref, tgt in enumerate(item["targets"]):
            tgt["refId"] = chr(ord("A") + ref)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["taskhub"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "annotations": {"list": [ANNOTATIONS]},
        "links": [LINKS],
        "templating": {"list": VARIABLES},
        "panels": panels,
    }


def slo() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    for name, (objective, bad, total) in SLOS.items():
        budget = round(1 - objective, 6)
        ratio_30d = f"{window(bad, '30d')} / {window(total, '30d')}"
        panels += [
            stat(
                f"{name} SLI (30 d)",
                "percentunit",
                f"Good events over the last 30 days; the objective is {objective:.1%}.",
                f"1 - ({ratio_30d})",
                thresholds=[(None, "red"), (objective, "green")],
                decimals=3,
                interval=SLO_STEP,
            ),
            stat(
                f"{name} error budget left (30 d)",
                "percentunit",
                f"Share of the 30-day error budget ({budget:.1%} of events) not yet spent; "
                "negative once the SLO is broken.",
                f"1 - ({ratio_30d}) / {budget}",
                thresholds=[(None, "red"), (0, "orange"), (0.25, "green")],
                decimals=1,
                bounded=False,  # it goes negative
                interval=SLO_STEP,
            ),
            ts(
                f"{name} burn rate",
                "suffix:x",
                "Error ratio over each window divided by the budget: 1 spends the budget in "
                "exactly 30 days; the fast-burn alerts page at 14.4 (1 h) and 6 (6 h).",
                *((f"({window(bad, w)} / {window(total, w)}) / {budget}", w) for w in BURN_WINDOWS),
                w=12,
                thresholds=[(None, "green"), (1, "orange"), (6, "red"), (14.4, "dark-red")],
                interval=SLO_STEP,
            ),
        ]
    alerts = f'ALERTS{{alertstate="firing", {NS}}}'
    panels += [
        stat(
            "Alerts firing",
            "short",
            "Number of alerts firing in this namespace.",
            f"count({alerts}) or vector(0)",
            thresholds=[(None, "green"), (1, "red")],
            w=4,
        ),
        panel(
            "table",
            "Firing alerts",
            "none",
            "Every alert firing in this namespace, with its labels.",
            [target(alerts, instant=True)],
            w=20,
            transformations=[
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
                }
            ],
        ),
    ]
    return dashboard(
        "taskhub-slo",
        "TaskHub / SLO overview",
        "Availability (99.9 %), latency (99 % under 0.5 s) and job delivery (99 %) SLOs.",
        panels,
    )


def api() -> dict[str, Any]:
    limits = "taskhub_ratelimit_decisions_total"
    fail_open = 'outcome="fail_open"'
    replicas = "kube_deployment_status_replicas_available"
    return dashboard(
        "taskhub-api",
        "TaskHub / API",
        "Rate, errors and duration per route; rate limiting; replicas.",
        [
            ts(
                "Requests by route and status",
                "reqps",
                "Requests per second, probes and scrapes excluded.",
                (sum_rate(HTTP, API, by="route, status"), "{{route}} {{status}}"),
                w=12,
            ),
            ts(
                "5xx ratio",
                "percentunit",
                "Share of responses that were 5xx, overall and per route.",
                (f"{sum_rate(HTTP, API, FIVE_XX)} / {sum_rate(HTTP, API)}", "all routes"),
                (
                    f"{sum_rate(HTTP, API, FIVE_XX, by='route')}"
                    f" / {sum_rate(HTTP, API, by='route')}",
                    "{{route}}",
                ),
                w=12,
                thresholds=[(None, "green"), (0.001, "orange"), (0.05, "red")],
            ),
            *quantiles(HTTP_SECONDS, API, "route", "Request duration"),
            ts(
                "Rate-limit decisions",
                "ops",
                "Decisions per second by bucket and outcome (allowed, limited, fail_open).",
                (sum_rate(limits, by="bucket, outcome"), "{{bucket}} {{outcome}}"),
                w=12,
            ),
            stat(
                "Rate limiter failing open",
                "ops",
                "Decisions per second let through because Redis could not be asked.",
                f"{sum_rate(limits, NS, fail_open)} or vector(0)",
                thresholds=[(None, "green"), (0.001, "red")],
            ),
            stat(
                "API replicas available",
                "short",
                "Available replicas of the API Deployment.",
                f'sum({replicas}{{{NS}, deployment=~".+-api"}})',
                thresholds=[(None, "red"), (1, "orange"), (2, "green")],
            ),
            ts(
                "Replicas available",
                "short",
                "Available replicas of every Deployment in the namespace.",
                (f"sum by (deployment) ({replicas}{{{NS}}})", "{{deployment}}"),
                w=24,
            ),
        ],
    )


def data() -> dict[str, Any]:
    cache = "taskhub_cache_requests_total"
    hit, hit_or_miss = 'result="hit"', 'result=~"hit|miss"'
    return dashboard(
        "taskhub-data",
        "TaskHub / Data path",
        "PostgreSQL primary and replica, read routing, cache, Redis, pools and PgBouncer.",
        [
            ts(
                "Database up (as the API sees it)",
                "none",
                "1 while the API can reach each node; the lowest value across API pods.",
                (f"min by (node) (taskhub_db_up{{{NS}}})", "{{node}}"),
                **UP,
            ),
            ts(
                "CNPG exporter up",
                "none",
                "1 while each PostgreSQL instance's CloudNativePG exporter can query it.",
                (f"cnpg_collector_up{{{NS}}}", "{{pod}}"),
                **UP,
            ),
            ts(
                "Replica lag",
                "bytes",
                "Bytes of WAL the replica is behind, as the API measures it.",
                (f"max(taskhub_db_replica_lag_bytes{{{NS}}})", "lag"),
            ),
            ts(
                "Replication lag (CNPG)",
                "s",
                "Seconds each standby is behind the primary.",
                (f"max by (pod) (cnpg_pg_replication_lag{{{NS}}})", "{{pod}}"),
            ),
            ts(
                "Reads by target",
                "ops",
                "Reads per second served by the replica, the primary, or the primary as a "
                "fallback for an unavailable or lagging replica.",
                (sum_rate("taskhub_db_reads_total", by="target"), "{{target}}"),
            ),
            ts(
                "Cache hit ratio",
                "percentunit",
                "Hits over hits and misses (bypassed requests are not cacheable).",
                (
                    f"{sum_rate(cache, NS, hit)} / {sum_rate(cache, NS, hit_or_miss)}",
                    "hit ratio",
                ),
            ),
            ts(
                "Cache requests by result",
                "ops",
                "Cache lookups per second: hit, miss, bypass.",
                (sum_rate(cache, by="result"), "{{result}}"),
            ),
            stat(
                "Redis up",
                "none",
                "1 while every API pod can reach Redis (the lowest value).",
                f"min(taskhub_redis_up{{{NS}}})",
                w=4,
                **UP,
            ),
            ts(
                "Redis errors",
                "ops",
                "Failed Redis calls per second.",
                (sum_rate("taskhub_redis_errors_total"), "errors"),
                w=12,
                thresholds=[(None, "green"), (0.001, "red")],
            ),
            ts(
                "Connections checked out",
                "short",
                "Connections in use from each SQLAlchemy pool, summed over pods.",
                (f"sum by (pool) (taskhub_db_pool_checked_out{{{NS}}})", "{{pool}}"),
            ),
            ts(
                "Pool wait p99",
                "s",
                "99th percentile of the time spent waiting for a pooled connection.",
                (quantile(0.99, "taskhub_db_pool_wait_seconds_bucket", NS, "pool"), "{{pool}}"),
            ),
            ts(
                "PgBouncer waiting clients",
                "short",
                "Clients queued in PgBouncer for a server connection, per pooler pod.",
                (f"sum by (pod) (cnpg_pgbouncer_pools_cl_waiting{{{NS}}})", "{{pod}}"),
                thresholds=[(None, "green"), (1, "orange")],
            ),
        ],
    )


def jobs() -> dict[str, Any]:
    # Quorum queues may be reported by every member: max, not sum, per queue.
    def per_queue(metric: str, selector: str = WORK_QUEUES) -> tuple[str, str]:
        return f"max by (vhost, queue) ({metric}{{{selector}}})", "{{queue}}"

    return dashboard(
        "taskhub-jobs",
        "TaskHub / Jobs and events",
        "Celery job outcomes and durations, RabbitMQ queues and DLQs, the outbox relay.",
        [
            ts(
                "Job outcomes by task",
                "ops",
                "Jobs per second by task and outcome "
                "(succeeded, retried, deferred, dead_lettered, duplicate).",
                (sum_rate(JOBS, by="task, outcome"), "{{task}} {{outcome}}"),
                w=12,
            ),
            ts(
                "Dead-letter ratio by task",
                "percentunit",
                "dead_lettered / (succeeded + dead_lettered); the delivery SLO allows 1 %.",
                (
                    f"{sum_rate(JOBS, NS, DEAD, by='task')}"
                    f" / {sum_rate(JOBS, NS, DELIVERED, by='task')}",
                    "{{task}}",
                ),
                w=12,
                thresholds=[(None, "green"), (0.01, "red")],
            ),
            *quantiles("taskhub_job_duration_seconds_bucket", NS, "task", "Job duration"),
            ts(
                "Queue depth: ready",
                "short",
                "Messages waiting for a consumer, per work queue.",
                per_queue("rabbitmq_queue_messages_ready"),
            ),
            ts(
                "Queue depth: unacked",
                "short",
                "Messages delivered to a worker and not yet acknowledged.",
                per_queue("rabbitmq_queue_messages_unacked"),
            ),
            ts(
                "Consumers",
                "short",
                "Consumers attached to each work queue.",
                per_queue("rabbitmq_queue_consumers"),
                thresholds=[(None, "red"), (1, "green")],
            ),
            ts(
                "DLQ depth",
                "short",
                "Messages in each dead-letter queue (`taskhub dlq list|replay|purge`).",
                per_queue("rabbitmq_queue_messages", DLQS),
                thresholds=[(None, "green"), (1, "red")],
            ),
            ts(
                "Queue wait p95 by task",
                "s",
                "95th percentile of the time from enqueue to a worker starting the job.",
                (quantile(0.95, "taskhub_job_queue_wait_seconds_bucket", NS, "task"), "{{task}}"),
                w=16,
            ),
            ts(
                "Outbox pending events",
                "short",
                "Events written by the API and not yet published by the relay.",
                (f"max(taskhub_outbox_pending_events{{{NS}}})", "pending"),
            ),
            ts(
                "Oldest pending event age",
                "s",
                "Age of the oldest unpublished outbox event.",
                (f"max(taskhub_outbox_oldest_pending_age_seconds{{{NS}}})", "age"),
            ),
            ts(
                "Relay throughput",
                "ops",
                "Events per second published (confirmed by RabbitMQ) and failed.",
                (sum_rate("taskhub_relay_published_total"), "published"),
                (sum_rate("taskhub_relay_failed_total"), "failed"),
            ),
            ts(
                "Relay confirm p99",
                "s",
                "99th percentile of the time RabbitMQ took to confirm a published batch.",
                (quantile(0.99, "taskhub_relay_confirm_seconds_bucket"), "p99"),
                w=24,
            ),
        ],
    )


DASHBOARDS = {"slo": slo, "api": api, "data": data, "jobs": jobs}


def build() -> dict[str, str]:
    """File name -> file content, for every dashboard."""
    return {
        f"{name}.json": json.dumps(make(), indent=2, sort_keys=True) + "\n"
        for name, make in DASHBOARDS.items()
    }


def write(output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build().items():
        (output / name).write_text(text)
        written.append(output / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    for path in write(parser.parse_args().output):
        print(path)


if __name__ == "__main__":
    main()
