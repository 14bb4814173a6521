"""The API's own metrics: the pool's checkouts and waits, the route label of probes and
scrapes, and a replica lag that disappears once it is unknown."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from taskhub_api.db import Database, create_engine, raw_connection
from taskhub_api.dbhealth import DatabaseMonitor
from taskhub_api.settings import Settings
from tests.monitoring.metric_names import API, families


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


class TestPoolMetrics:
    async def test_checked_out_counts_connections_held_by_the_app(self, app: FastAPI) -> None:
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


class TestProbeAndScrapeRoutes:
    async def test_probes_and_scrapes_are_labelled_by_their_route(
        self, client: httpx.AsyncClient
    ) -> None:
        paths = ["/health/live", "/health/ready", "/health", "/metrics"]
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
            monitor.replica.dsn = "postgresql://taskhub@127.0.0.1:1/taskhub"
            await monitor.probe_all()
            assert not monitor.replica.up
            assert _sample("taskhub_db_replica_lag_bytes") is None
            # The family stays (HELP and TYPE), without a sample.
            exposed = generate_latest(REGISTRY).decode()
            assert "# TYPE taskhub_db_replica_lag_bytes gauge" in exposed
            assert "\ntaskhub_db_replica_lag_bytes " not in exposed
        finally:
            await monitor.stop()


class TestContract:
    async def test_the_api_serves_every_metric_the_rules_and_dashboards_name(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/metrics")
        assert response.status_code == 200
        served = {family.name for family in text_string_to_metric_families(response.text)}
        assert families(API) <= served, families(API) - served
