"""Read-your-writes through PgBouncer with a streaming replica whose replay is paused,
stopped or too far behind."""

from __future__ import annotations

import secrets
import time
import uuid

from tests.data.conftest import (
    TOKEN_HEADER,
    Server,
    StartServer,
    create_task,
    primary_sql,
    replica_sql,
)
from tests.stack import devstack
from tests.support.wait import eventually

TASKS = "/api/v1/tasks"


async def pause_replay() -> None:
    await replica_sql("SELECT pg_wal_replay_pause()")
    assert await replica_sql("SELECT pg_is_wal_replay_paused()")


async def on_replica(task_id: str) -> bool:
    return bool(await replica_sql("SELECT count(*) FROM task WHERE id = $1", uuid.UUID(task_id)))


class TestPausedReplay:
    async def test_a_writer_sees_its_writes_while_the_replica_lags(self, server: Server) -> None:
        alice = await server.signup()
        await pause_replay()
        async with server.client() as http:
            task = await create_task(http, alice, title="written while replay is paused")
            assert not await on_replica(task["id"])  # the replica really is behind

            got = await http.get(f"{TASKS}/{task['id']}", headers=alice.with_token())
            assert got.status_code == 200
            assert got.json()["title"] == "written while replay is paused"
            listed = await http.get(TASKS, headers=alice.with_token())
            assert [t["id"] for t in listed.json()["items"]] == [task["id"]]

            for version in range(2, 6):
                patched = await http.patch(
                    f"{TASKS}/{task['id']}",
                    json={"title": f"edit {version}"},
                    headers=alice.with_token(),
                )
                assert patched.status_code == 200
                alice.token = patched.headers[TOKEN_HEADER]
                got = await http.get(f"{TASKS}/{task['id']}", headers=alice.with_token())
                assert (got.json()["title"], got.json()["version"]) == (f"edit {version}", version)
            assert not await on_replica(task["id"])

    async def test_other_reads_still_use_the_replica(self, server: Server) -> None:
        bob = await server.signup()
        await pause_replay()
        before = await server.metric("taskhub_db_reads_total", target="replica")
        async with server.client() as http:
            for _ in range(3):
                assert (await http.get(TASKS, headers=bob.headers)).status_code == 200
        assert await server.metric("taskhub_db_reads_total", target="replica") >= before + 1

    async def test_reads_return_to_the_replica_once_it_replays(self, server: Server) -> None:
        alice = await server.signup()
        await pause_replay()
        async with server.client() as http:
            task = await create_task(http, alice)
            await replica_sql("SELECT pg_wal_replay_resume()")
            await eventually(lambda: on_replica(task["id"]), within=10)
            before = await server.metric("taskhub_db_reads_total", target="replica")
            limits = iter(range(50, 100))

            async def read_from_replica() -> bool:
                # A new page each time (the limit changes) so the cache cannot answer.
                got = await http.get(
                    TASKS, params={"limit": next(limits)}, headers=alice.with_token()
                )
                assert got.status_code == 200
                assert [t["id"] for t in got.json()["items"]] == [task["id"]]
                return await server.metric("taskhub_db_reads_total", target="replica") > before

            await eventually(read_from_replica, within=10, interval=0.3)


class TestLaggingReplica:
    async def test_a_replica_too_far_behind_is_skipped(self, start_server: StartServer) -> None:
        server = start_server(
            TASKHUB_CACHE__ENABLED="false", TASKHUB_DB__MAX_REPLICA_LAG_BYTES="65536"
        )
        writer, reader = await server.signup(), await server.signup("viewer")
        await pause_replay()
        async with server.client() as http:
            for _ in range(40):  # well over 64 KiB of WAL (random text does not compress)
                await create_task(http, writer, description=secrets.token_hex(2000))
            ids = await primary_sql(
                "SELECT count(*) FROM task WHERE owner_id = $1", uuid.UUID(writer.id)
            )
            assert ids == 40

            async def lag_noticed() -> bool:
                ready = (await http.get("/health/ready")).json()
                return "lagging" in ready["checks"]["replica"]

            await eventually(lag_noticed, within=5)
            replica_reads = await server.metric("taskhub_db_reads_total", target="replica")
            # A reader without any token sees the fresh data: the replica is skipped.
            page = await http.get(TASKS, params={"limit": 100}, headers=reader.headers)
            assert page.status_code == 200
            mine = [t for t in page.json()["items"] if t["owner_id"] == writer.id]
            assert len(mine) == 40
            assert await server.metric("taskhub_db_reads_total", target="replica") == replica_reads


class TestReplicaDown:
    async def test_reads_continue_without_errors(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            await eventually(lambda: on_replica(task["id"]), within=10)
            devstack("stop", "replica")
            statuses, slowest = [], 0.0
            for limit in range(1, 30):  # new pages: no cache hits
                started = time.perf_counter()
                got = await http.get(TASKS, params={"limit": limit}, headers=alice.headers)
                slowest = max(slowest, time.perf_counter() - started)
                statuses.append(got.status_code)
                assert [t["id"] for t in got.json()["items"]] == [task["id"]]
            assert set(statuses) == {200}
            # At worst one read per pooled connection waits replica_read_timeout (1 s).
            assert slowest < 1.8, slowest

            async def replica_reported_down() -> bool:
                ready = (await http.get("/health/ready")).json()
                assert ready["status"] == "ok"  # the replica is not needed to be ready
                return bool(ready["checks"]["replica"].startswith("unavailable"))

            await eventually(replica_reported_down, within=5)

            devstack("start", "replica")
            await eventually(lambda: _replica_ok(server), within=15)


async def _replica_ok(server: Server) -> bool:
    async with server.client() as http:
        return (await http.get("/health/ready")).json()["checks"]["replica"] == "ok"
