"""The API's own metrics: the pool's checkouts and waits, the route label of probes, a
replica lag that disappears once it is unknown, and where they are served: never on the
API's port, always on the metrics port (`taskhub api --metrics-port`), summed over
every uvicorn worker when there are several."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncEngine

from taskhub_api.db import Database, create_engine, raw_connection
from taskhub_api.dbhealth import DatabaseMonitor
from taskhub_api.observability import serve_metrics
from taskhub_api.settings import Settings
from tests.monitoring.metric_names import API, families
from tests.support.net import CLOSED_PORT, free_port
from tests.support.wait import eventually

TASKHUB = Path(sys.executable).parent / "taskhub"
# Read from live objects of one process (a pool, the replica monitor): uvicorn workers
# that write their metrics to files cannot report them.
IN_PROCESS_ONLY = {"taskhub_db_pool_checked_out", "taskhub_db_replica_lag_bytes"}


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


class TestPoolMetrics:
    async def test_checked_out_counts_connections_held_by_the_app(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        # Ready once the pools are warm: the warm-up holds connections meanwhile.
        await eventually(ready, within=30)
        db: Database = app.state.db
        before = _sample("taskhub_db_pool_checked_out", pool="primary")
        assert before is not None
        async with AsyncExitStack() as held:
            for _ in range(3):
                await held.enter_async_context(raw_connection(db.primary))
            assert _sample("taskhub_db_pool_checked_out", pool="primary") == before + 3
        assert _sample("taskhub_db_pool_checked_out", pool="primary") == before

    async def test_a_checkout_that_waits_is_observed_under_its_pool(
        self, settings: Settings
    ) -> None:
        # Its own pool name: other pools of the test process leave these series alone.
        engine = create_engine(
            settings.db.url,
            settings.db.model_copy(update={"pool_size": 1, "max_overflow": 0}),
            pool="replica",
        )
        count = _sample("taskhub_db_pool_wait_seconds_count", pool="replica") or 0.0
        total = _sample("taskhub_db_pool_wait_seconds_sum", pool="replica") or 0.0
        fast = _sample("taskhub_db_pool_wait_seconds_bucket", pool="replica", le="0.25") or 0.0
        try:
            async with raw_connection(engine):
                waiter = asyncio.create_task(_use_one(engine))
                await asyncio.sleep(0.3)
                assert not waiter.done()  # waits for the only connection
            await waiter
        finally:
            await engine.dispose()
        assert _sample("taskhub_db_pool_wait_seconds_count", pool="replica") == count + 2
        waited = _sample("taskhub_db_pool_wait_seconds_sum", pool="replica")
        assert waited is not None and waited - total >= 0.3
        # The first checkout (one connect) is fast; the one that waited is not.
        assert _sample("taskhub_db_pool_wait_seconds_bucket", pool="replica", le="0.25") == fast + 1


async def _use_one(engine: AsyncEngine) -> None:
    async with raw_connection(engine) as conn:
        await conn.fetchval("SELECT 1")


class TestProbeRoutes:
    async def test_probes_are_labelled_by_their_route(self, client: httpx.AsyncClient) -> None:
        paths = ["/health/live", "/health/ready", "/health"]
        before = {
            path: _sample("taskhub_http_requests_total", method="GET", route=path, status="200")
            or 0.0
            for path in paths
        }
        for path in paths:
            assert (await client.get(path)).status_code == 200, path
        for path in paths:
            after = _sample("taskhub_http_requests_total", method="GET", route=path, status="200")
            assert after == before[path] + 1, path


class TestReplicaLag:
    async def test_lag_is_reported_while_known_and_removed_when_the_replica_is_down(
        self, settings: Settings
    ) -> None:
        # The primary stands in for the replica (the probe reads either).
        db_settings = settings.db.model_copy(update={"replica_url": settings.db.url})
        monitor = DatabaseMonitor(db_settings, replica=True)
        try:
            await monitor.probe_all()
            lag = _sample("taskhub_db_replica_lag_bytes")
            assert lag is not None and lag >= 0
            assert monitor.replica is not None
            await monitor.stop()  # closes the probe connections
            monitor.replica.dsn = f"postgresql://taskhub@127.0.0.1:{CLOSED_PORT}/taskhub"
            await monitor.probe_all()
            assert not monitor.replica.up
            assert _sample("taskhub_db_replica_lag_bytes") is None
            # The family stays (HELP and TYPE), without a sample.
            exposed = generate_latest(REGISTRY).decode()
            assert "# TYPE taskhub_db_replica_lag_bytes gauge" in exposed
            assert "\ntaskhub_db_replica_lag_bytes " not in exposed
        finally:
            await monitor.stop()


def _families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def _samples(text: str, name: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


class TestInProcess:
    async def test_the_app_has_no_metrics_route(self, client: httpx.AsyncClient) -> None:
        before = _sample(
            "taskhub_http_requests_total", method="GET", route="unmatched", status="404"
        )
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert "taskhub_http_requests_total" not in response.text
        after = _sample(
            "taskhub_http_requests_total", method="GET", route="unmatched", status="404"
        )
        assert after == (before or 0.0) + 1
        assert "/metrics" not in (await client.get("/openapi.json")).text

    async def test_the_metrics_server_serves_every_metric_the_rules_and_dashboards_name(
        self, client: httpx.AsyncClient
    ) -> None:
        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await eventually(ready, within=30)
        server = serve_metrics("127.0.0.1", free_port())
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(f"http://127.0.0.1:{server.server_port}/metrics")
        finally:
            server.shutdown()
            server.server_close()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        served = _families(response.text)
        assert families(API) <= served, families(API) - served
        # This process's own collectors besides (a single worker is one process).
        assert {"process_resident_memory_bytes", "python_info"} <= served
        assert _total(response.text, "/health/ready") >= 1


@dataclass
class ApiProcess:
    """`taskhub api` for real (uvicorn), on two ports of its own."""

    port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def scrape(self) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(self.metrics_url)
        assert response.status_code == 200, response.text
        return response.text

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


StartApi = Callable[..., ApiProcess]


@pytest.fixture
def start_api(settings: Settings, tmp_path: Path) -> Iterator[StartApi]:
    started: list[ApiProcess] = []

    def start(*args: str) -> ApiProcess:
        port, metrics_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TASKHUB_", "OTEL_"))},
            "TASKHUB_DB__URL": settings.db.url,
            "TASKHUB_REDIS__URL": settings.redis.url,
            "TASKHUB_REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "TASKHUB_AUTH__SECRET_KEY": settings.auth.secret_key.get_secret_value(),
            "TASKHUB_LOG_JSON": "false",
            "TASKHUB_LOG_LEVEL": "INFO",
        }
        log = tmp_path / f"api-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(TASKHUB),
                    "api",
                    "--host=127.0.0.1",
                    f"--port={port}",
                    f"--metrics-port={metrics_port}",
                    *args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        api = ApiProcess(port, metrics_port, process, log)
        started.append(api)
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{api.url}/health/ready", timeout=2).status_code == 200:
                    return api
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    yield start
    for api in started:
        api.stop()


async def _probes(api: ApiProcess, count: int) -> None:
    """``count`` probes, each on a new connection (so uvicorn's workers share them)."""
    for _ in range(count):
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            assert (await http.get("/health/live")).status_code == 200


def _total(text: str, route: str) -> float:
    return sum(
        s.value
        for s in _samples(text, "taskhub_http_requests_total")
        if s.labels.get("route") == route and s.labels.get("status") == "200"
    )


class TestTaskhubApiProcess:
    async def test_one_worker_serves_its_metrics_on_the_metrics_port_only(
        self, start_api: StartApi
    ) -> None:
        api = start_api()
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            assert (await http.get("/metrics")).status_code == 404
        await _probes(api, 3)
        text = await api.scrape()
        served = _families(text)
        assert families(API) <= served, families(API) - served
        assert "process_resident_memory_bytes" in served
        assert _total(text, "/health/live") == 3
        # The 404 above is counted as an unknown path, not as a route of its own.
        routes = {s.labels["route"] for s in _samples(text, "taskhub_http_requests_total")}
        assert "unmatched" in routes
        assert "/metrics" not in routes

    async def test_several_workers_are_summed_and_a_dead_one_drops_out(
        self, start_api: StartApi
    ) -> None:
        api = start_api("--workers=2")
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            assert (await http.get("/metrics")).status_code == 404

        async def both_workers_report() -> bool:
            text = await api.scrape()
            return len({s.labels["pid"] for s in _samples(text, "taskhub_db_up")}) == 2

        # uvicorn starts (and under load may restart) its workers in the background.
        await eventually(both_workers_report, within=90)
        await _probes(api, 20)
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            # A worker's file holds a labelled series from its first sample on: one
            # rate-limit decision, so that family is there too.
            login = {"username": "nobody", "password": "not-the-password-1"}
            assert (await http.post("/api/v1/auth/token", data=login)).status_code == 401
        text = await api.scrape()
        assert _total(text, "/health/live") == 20
        served = _families(text)
        assert families(API) - IN_PROCESS_ONLY <= served, families(API) - served
        # Both workers served some of the probes: the sum is not one worker's count.
        pids = {s.labels["pid"] for s in _samples(text, "taskhub_db_up")}
        assert len(pids) == 2

        # uvicorn replaces a worker that died: its counts stay, its gauges go.
        victim = int(min(pids))
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            text = await api.scrape()
            now = {s.labels["pid"] for s in _samples(text, "taskhub_db_up")}
            return str(victim) not in now and len(now) == 2

        await eventually(replaced, within=90)
        await _probes(api, 5)
        assert _total(await api.scrape(), "/health/live") == 25
        assert api.process.poll() is None
