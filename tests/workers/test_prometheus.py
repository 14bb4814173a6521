"""A real Prometheus, with the chart's recording rules, scrapes the real API
(uvicorn, on its metrics port), worker and relay processes while they serve a
short load, and records the SLIs the alerts read from what they really exported."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.monitoring.monitoring_helpers import (
    API_JOB,
    RELAY_JOB,
    WORKER_JOB,
    default_groups,
    prometheus_bin,
    records,
    scrape_jobs,
    write_rule_file,
)
from tests.support.net import free_port
from tests.support.wait import eventually
from tests.workers.conftest import Stack

NAMESPACE = "taskhub"
WELCOME = "notifications.welcome_email"
PASSWORD = "pw-long-42x"
# What the SLIs leave out (the rules' own matcher, checked below).
NOT_SLI = "/health|/health/live|/health/ready|/metrics"
SLI_REQUESTS = (
    f'taskhub_http_requests_total{{namespace="{NAMESPACE}", job="{API_JOB}", route!~"{NOT_SLI}"}}'
)
SLIS = ("api_errors", "api_slow_requests", "jobs_dead_lettered")


@dataclass
class Scraped:
    api: str
    prometheus: str
    log: Path
    stack: Stack

    def logs(self) -> str:
        return f"{self.stack.log_text()[-4000:]}\n== prometheus\n{self.log.read_text()[-3000:]}"


def prometheus_config(rules: Path, targets: dict[str, tuple[int, dict[str, str]]]) -> Any:
    """One scrape job per target, relabelled as the chart's ServiceMonitors label
    them (`namespace`, `job` = the Service's name, and any extra labels)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                "relabel_configs": [
                    {"target_label": label, "replacement": value}
                    for label, value in {"namespace": NAMESPACE, "job": job, **extra}.items()
                ],
            }
            for job, (port, extra) in targets.items()
        ],
    }


@pytest.fixture
def scraped(stack: Stack, redis_url: str, tmp_path: Path) -> Iterator[Scraped]:
    # The scrape jobs are named as the chart's ServiceMonitors name them, which is
    # what the rules select.
    assert scrape_jobs() == {
        "api": API_JOB,
        "worker": WORKER_JOB,
        "relay": RELAY_JOB,
        "beat": "taskhub-beat-metrics",
        "operator": "taskhub-operator",
    }
    worker_port, relay_port, api_port, api_metrics_port, prometheus_port = (
        free_port() for _ in range(5)
    )
    stack.worker(queues="notifications,webhooks", metrics_port=worker_port)
    stack.relay(metrics_port=relay_port)
    # The API process alone needs Redis (cache, rate limits): the project's own.
    stack.env["TASKHUB_REDIS__URL"] = redis_url
    stack.env["TASKHUB_REDIS__KEY_PREFIX"] = f"taskhub-test-{uuid.uuid4().hex[:8]}:"
    stack.spawn(
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        str(api_port),
        "--metrics-port",
        str(api_metrics_port),
        ready="Application startup",
    )

    storage = tmp_path / "prometheus"
    storage.mkdir()
    rules = write_rule_file(storage / "rules.yaml", default_groups())
    targets = {
        # As the chart's ServiceMonitor: the metrics port, not the API's.
        API_JOB: (api_metrics_port, {}),
        # The chart runs one worker Deployment per group; this one is "notifications".
        WORKER_JOB: (worker_port, {"worker_group": "notifications"}),
        RELAY_JOB: (relay_port, {}),
    }
    (storage / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(rules, targets)))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(prometheus_bin() / "prometheus"),
                f"--config.file={storage / 'prometheus.yml'}",
                f"--storage.tsdb.path={storage / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Scraped(
            f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}", log, stack
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(storage, ignore_errors=True)


async def query(prometheus: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    try:
        response = await prometheus.get("/api/v1/query", params={"query": promql})
    except httpx.TransportError:  # not listening yet
        return []
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def scalar(prometheus: httpx.AsyncClient, promql: str) -> float | None:
    result = await query(prometheus, promql)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


@dataclass
class Load:
    """Requests sent to the API over HTTP, and how long each took (client side)."""

    http: httpx.AsyncClient
    statuses: list[int] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    registered: int = 0

    async def send(self, method: str, path: str, expected: int, **kwargs: Any) -> httpx.Response:
        start = time.monotonic()
        response = await self.http.request(method, path, **kwargs)
        self.elapsed.append(time.monotonic() - start)
        self.statuses.append(response.status_code)
        assert response.status_code == expected, (method, path, response.text)
        return response

    async def register(self) -> str:
        name = f"load-{uuid.uuid4().hex[:8]}"
        await self.send(
            "POST",
            "/api/v1/auth/register",
            201,
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        self.registered += 1
        return name


class TestPrometheusScrapesTheStack:
    async def test_slis_are_recorded_from_the_real_processes(self, scraped: Scraped) -> None:
        # The SLIs' own exclusions are the ones this test counts around.
        api_errors = next(
            r for r in records(default_groups()) if r["record"].endswith("errors:ratio_rate5m")
        )
        assert f'route!~"{NOT_SLI}"' in api_errors["expr"]

        async with (
            httpx.AsyncClient(base_url=scraped.api, timeout=10) as api,
            httpx.AsyncClient(base_url=scraped.prometheus, timeout=5) as prometheus,
        ):
            load = Load(api)

            async def seen(promql: str, value: float) -> bool:
                return await scalar(prometheus, promql) == value

            async def welcomes_seen(count: int) -> bool:
                return await seen(
                    f'sum(taskhub_jobs_total{{job="{WORKER_JOB}", task="{WELCOME}", '
                    'outcome="succeeded"})',
                    count,
                )

            async def requests_seen() -> bool:
                return await seen(f"sum({SLI_REQUESTS})", len(load.statuses))

            # A probe, as the kubelet's: served, and left out of the SLIs.
            assert (await api.get("/health/ready")).status_code == 200
            # A counter's rate needs two samples: first a little of everything, scraped
            # (the welcome job has run), then the load the SLIs are computed over.
            name = await load.register()
            login = await load.send(
                "POST", "/api/v1/auth/token", 200, data={"username": name, "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            first = await load.send(
                "POST", "/api/v1/tasks", 201, json={"title": "warm-up"}, headers=headers
            )
            await load.send("GET", f"/api/v1/tasks/{first.json()['id']}", 200, headers=headers)
            await load.send("GET", "/api/v1/no-such-thing", 404)
            # The API's own port has no /metrics: an unknown path, counted as one.
            await load.send("GET", "/metrics", 404)
            await eventually(
                lambda: welcomes_seen(1), 30, f"the first welcome job\n{scraped.logs()}"
            )
            await eventually(requests_seen, 15, f"the warm-up requests\n{scraped.logs()}")

            for _ in range(4):
                await load.register()
            ids = [
                (
                    await load.send(
                        "POST", "/api/v1/tasks", 201, json={"title": f"t{i}"}, headers=headers
                    )
                ).json()["id"]
                for i in range(20)
            ]
            for task_id in ids[:15]:
                await load.send("GET", f"/api/v1/tasks/{task_id}", 200, headers=headers)
            for _ in range(3):
                await load.send("GET", "/api/v1/tasks", 200, headers=headers)
            for _ in range(2):
                await load.send("GET", f"/api/v1/tasks/{uuid.uuid4()}", 404, headers=headers)
                await load.send("GET", "/api/v1/no-such-thing", 404)
            assert len(load.statuses) == 52
            assert not [s for s in load.statuses if s >= 500]

            await eventually(
                lambda: welcomes_seen(load.registered), 30, f"the welcome jobs\n{scraped.logs()}"
            )
            await eventually(requests_seen, 15, f"the load\n{scraped.logs()}")
            scraped_at = time.time()

            async def recorded() -> dict[str, float] | None:
                """The 5m SLIs, once evaluated after the whole load was scraped."""
                found: dict[str, float] = {}
                for sli in SLIS:
                    series = await query(prometheus, f"taskhub_slo:{sli}:ratio_rate5m")
                    stamps = await scalar(
                        prometheus, f"max(timestamp(taskhub_slo:{sli}:ratio_rate5m))"
                    )
                    if len(series) != 1 or stamps is None or stamps < scraped_at + 1:
                        return None
                    assert series[0]["metric"] == {
                        "__name__": f"taskhub_slo:{sli}:ratio_rate5m",
                        "namespace": NAMESPACE,
                        "job": WORKER_JOB if sli.startswith("jobs") else API_JOB,
                    }
                    found[sli] = float(series[0]["value"][1])
                return found

            slis = await eventually(recorded, 15, f"the recorded SLIs\n{scraped.logs()}")

            # No 5xx among the counted requests (the 404s count as good), no dead letter.
            assert slis["api_errors"] == 0.0
            assert slis["jobs_dead_lettered"] == 0.0
            # Slow means over 0.5 s; the server's time is below the client's.
            if max(load.elapsed) < 0.5:
                assert slis["api_slow_requests"] == 0.0
            else:
                assert 0.0 <= slis["api_slow_requests"] < 0.2, (slis, sorted(load.elapsed))

            up = await query(prometheus, "up")
            assert {(s["metric"]["job"], s["metric"]["namespace"], s["value"][1]) for s in up} == {
                (API_JOB, NAMESPACE, "1"),
                (WORKER_JOB, NAMESPACE, "1"),
                (RELAY_JOB, NAMESPACE, "1"),
            }
            # The probe was served, and left out (scrapes no longer reach the app).
            probes = await scalar(
                prometheus,
                f'sum(taskhub_http_requests_total{{job="{API_JOB}", route=~"{NOT_SLI}"}})',
            )
            assert probes is not None and probes > 0
