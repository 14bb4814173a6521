"""The primary, PgBouncer and the connection pool failing under a running API."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx

from tests.data.conftest import (
    TOKEN_HEADER,
    Server,
    StartServer,
    create_task,
    replica_sql,
)
from tests.stack import PRIMARY_DSN, devstack
from tests.support.wait import eventually

TASKS = "/api/v1/tasks"


async def timed(request: asyncio.Future[httpx.Response] | object) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request  # type: ignore[misc]
    return response, time.perf_counter() - started


class TestPrimaryDown:
    async def test_writes_fail_fast_reads_go_on_and_all_recovers(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice, title="before the outage")
            await eventually(
                lambda: replica_sql(
                    "SELECT count(*) FROM task WHERE id = $1", uuid.UUID(task["id"])
                )
            )
            devstack("stop", "primary")

            # Requests caught in the moment of failure are bounded (command_timeout).
            first, first_took = await timed(
                http.post(TASKS, json={"title": "during"}, headers=alice.headers)
            )
            assert first.status_code == 503 and first_took < 2, first_took
            print(f"first write after the stop: {first_took:.3f} s")

            async def unready() -> bool:
                return (await http.get("/health/ready")).status_code == 503

            await eventually(unready, within=5)

            latencies = []
            for i in range(10):
                response, took = await timed(
                    http.patch(
                        f"{TASKS}/{task['id']}", json={"title": f"no {i}"}, headers=alice.headers
                    )
                )
                latencies.append(took)
                assert response.status_code == 503
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["Retry-After"]) >= 1
                assert response.json()["status"] == 503
            assert max(latencies) < 0.5, latencies
            print(f"503 latency with the primary down: max {max(latencies) * 1000:.1f} ms")

            # Reads come from the replica, including for the writer's own token.
            got = await http.get(f"{TASKS}/{task['id']}", headers=alice.with_token())
            assert got.status_code == 200 and got.json()["title"] == "before the outage"
            listed = await http.get(TASKS, params={"limit": 7}, headers=alice.headers)
            assert [t["id"] for t in listed.json()["items"]] == [task["id"]]

            devstack("start", "primary")
            await eventually(server.ready, within=15)

            async def writable() -> bool:
                response = await http.patch(
                    f"{TASKS}/{task['id']}", json={"title": "after"}, headers=alice.headers
                )
                return response.status_code == 200

            await eventually(writable, within=10)
            alice.token = None
            assert (
                await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
            ).status_code == 200


class TestPgBouncerRestart:
    async def test_requests_never_hang_and_recover(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            devstack("restart", "pgbouncer")
            outcomes = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                response, took = await timed(
                    http.patch(
                        f"{TASKS}/{task['id']}",
                        json={"title": str(len(outcomes))},
                        headers=alice.headers,
                    )
                )
                assert took < 4, took  # never hangs
                outcomes.append(response.status_code)
                if outcomes[-3:] == [200, 200, 200]:
                    break
            assert outcomes[-3:] == [200, 200, 200], outcomes
            assert set(outcomes) <= {200, 503}, outcomes
            print(f"PgBouncer restart, PATCH outcomes in order: {outcomes}")
            got = await http.get(TASKS, params={"limit": 3}, headers=alice.headers)
            assert got.status_code == 200


class TestPoolExhaustion:
    async def test_gives_fast_503s_not_a_pile_of_timeouts(self, start_server: StartServer) -> None:
        server = start_server(
            TASKHUB_DB__POOL_SIZE="2",
            TASKHUB_DB__MAX_OVERFLOW="0",
            TASKHUB_DB__POOL_TIMEOUT="0.3",
            TASKHUB_DB__COMMAND_TIMEOUT="10",
        )
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            # Hold the task's row lock: PATCHes queue on it, each holding a connection.
            holder = await asyncpg.connect(PRIMARY_DSN)
            try:
                lock = holder.transaction()
                await lock.start()
                await holder.execute(
                    "SELECT 1 FROM task WHERE id = $1 FOR UPDATE", uuid.UUID(task["id"])
                )
                blocked = [
                    asyncio.create_task(
                        http.patch(
                            f"{TASKS}/{task['id']}", json={"title": f"b{i}"}, headers=alice.headers
                        )
                    )
                    for i in range(2)
                ]
                await asyncio.sleep(1.0)  # both now hold the pool's two connections
                results = await asyncio.gather(
                    *(
                        timed(http.get(TASKS, params={"limit": 9 + i}, headers=alice.headers))
                        for i in range(8)
                    )
                )
                statuses = [r.status_code for r, _ in results]
                assert set(statuses) == {503}, statuses
                assert max(took for _, took in results) < 1.5, [took for _, took in results]
                assert all(r.headers["Retry-After"] for r, _ in results)
            finally:
                await lock.rollback()
                await holder.close()
            done = await asyncio.gather(*blocked)
            assert [r.status_code for r in done] == [200, 200]
            assert TOKEN_HEADER in done[0].headers
