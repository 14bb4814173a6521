"""A real Prometheus loads the chart's rules, scrapes synthetic API and worker
targets (the contract's metric names at known rates) and records the SLIs the
alerts read."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tests.support.net import free_port

from .monitoring_helpers import API_JOB, WORKER_JOB, default_groups, records, write_rule_file

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# Per-second rates of the synthetic series. Probes and scrapes fail and are
# slow on purpose: the SLIs must not see them.
REQUESTS = {
    ("/tasks", "200"): 99,
    ("/tasks", "500"): 1,
    ("/health/ready", "503"): 1000,
    ("/health/live", "200"): 1000,
    ("/metrics", "200"): 500,
}
DURATIONS = {  # route -> cumulative rate per bucket
    "/tasks": {"0.1": 50, "0.5": 95, "+Inf": 100},
    "/health/ready": {"0.1": 0, "0.5": 0, "+Inf": 1000},
}
JOBS = {"succeeded": 98, "dead_lettered": 2, "retried": 50, "deferred": 5, "duplicate": 10}
EXPECTED = {
    "api_errors": 1 / 100,
    "api_slow_requests": 5 / 100,
    "jobs_dead_lettered": 2 / 100,
}


class Growing(Collector):
    """Counters that grow at fixed rates from the collector's creation, all
    read at the same instant in one scrape (so ratios of rates are exact)."""

    def __init__(self, families: Any) -> None:
        self.start = time.time() - 1
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return list(self.families(time.time() - self.start))


def api_families(t: float) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "taskhub_http_requests", "API requests", labels=["method", "route", "status"]
    )
    for (route, status), rate in REQUESTS.items():
        requests.add_metric(["GET", route, status], rate * t)
    yield requests
    durations = HistogramMetricFamily(
        "taskhub_http_request_duration_seconds", "API latency", labels=["method", "route"]
    )
    for route, buckets in DURATIONS.items():
        durations.add_metric(
            ["GET", route], [(le, rate * t) for le, rate in buckets.items()], sum_value=t
        )
    yield durations


def worker_families(t: float) -> Iterator[Metric]:
    jobs = CounterMetricFamily("taskhub_jobs", "Jobs", labels=["task", "outcome"])
    for outcome, rate in JOBS.items():
        jobs.add_metric(["webhooks.deliver", outcome], rate * t)
    yield jobs


class Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(families: Any) -> WSGIServer:
    registry = CollectorRegistry()
    registry.register(Growing(families))
    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def prometheus(prometheus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    api, workers = serve(api_families), serve(worker_families)
    write_rule_file(work / "rules.yaml", default_groups())
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{server.server_address[1]}"],
                        "labels": {"namespace": "taskhub"},
                    }
                ],
            }
            for job, server in ((API_JOB, api), (WORKER_JOB, workers))
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(prometheus_dir / "prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        api.shutdown()
        workers.shutdown()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def recorded(base: str, deadline: float = 25) -> list[dict[str, Any]]:
    """Every SLI series, once all of them have a number (two scrapes and an
    evaluation after Prometheus starts)."""
    promql = '{__name__=~"taskhub_slo:.+"}'
    end = time.monotonic() + deadline
    while True:
        try:
            found = query(base, promql)
        except httpx.HTTPError:
            found = []
        numbers = [s for s in found if s["value"][1] not in ("NaN", "+Inf", "-Inf")]
        if len(numbers) == len(EXPECTED) * len(WINDOWS) or time.monotonic() > end:
            return found
        time.sleep(0.5)


class TestRecordingRules:
    def test_slis_are_recorded_with_their_values(self, prometheus: str) -> None:
        series = recorded(prometheus)
        names = {s["metric"]["__name__"] for s in series}
        assert names == {f"taskhub_slo:{sli}:ratio_rate{w}" for sli in EXPECTED for w in WINDOWS}
        assert names == {r["record"] for r in records(default_groups())}
        for s in series:
            metric = s["metric"]
            sli = metric["__name__"].split(":")[1]
            job = WORKER_JOB if sli.startswith("jobs") else API_JOB
            assert metric == {"__name__": metric["__name__"], "namespace": "taskhub", "job": job}
            assert float(s["value"][1]) == pytest.approx(EXPECTED[sli], rel=1e-6), metric

    def test_targets_were_scraped_as_the_rules_select_them(self, prometheus: str) -> None:
        up = query(prometheus, 'up{namespace="taskhub"}')
        assert {(s["metric"]["job"], s["value"][1]) for s in up} == {
            (API_JOB, "1"),
            (WORKER_JOB, "1"),
        }

    def test_burn_rate_alerts_follow_the_recorded_slis(self, prometheus: str) -> None:
        """1 % errors is 10x the availability budget (0.1 %): both of its
        alerts go pending; 5 % slow requests (5x of 1 %) and 2 % dead letters
        (2x) only burn the slow budgets."""
        expected = {
            "TaskHubApiAvailabilityBudgetBurnFast",
            "TaskHubApiAvailabilityBudgetBurnSlow",
            "TaskHubApiLatencyBudgetBurnSlow",
            "TaskHubJobDeliveryBudgetBurnSlow",
        }
        recorded(prometheus)
        deadline = time.monotonic() + 10
        while True:
            body = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()
            active = {
                a["labels"]["alertname"]
                for a in body["data"]["alerts"]
                if "BudgetBurn" in a["labels"]["alertname"]
            }
            if active == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert active == expected
