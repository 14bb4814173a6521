"""The Redis cache: hits, never stale for the writer, per-scope invalidation, and the
API going on without Redis (and coming back with it)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import redis.asyncio as aioredis

from taskhub_api.cache import Cache
from taskhub_api.kit.lsn import fixed_hex
from taskhub_api.redisstore import RedisStore
from taskhub_api.settings import CacheSettings, RedisSettings
from tests.data.conftest import (
    TOKEN_HEADER,
    Actor,
    Server,
    create_task,
    replica_sql,
)
from tests.stack import REDIS_URL, devstack
from tests.support.wait import eventually

TASKS = "/api/v1/tasks"


async def hits(server: Server) -> float:
    return await server.metric("taskhub_cache_requests_total", result="hit")


async def patch(http: httpx.AsyncClient, actor: Actor, task_id: str, **fields: object) -> None:
    response = await http.patch(f"{TASKS}/{task_id}", json=fields, headers=actor.with_token())
    assert response.status_code == 200, response.text
    actor.token = response.headers[TOKEN_HEADER]


class TestCache:
    async def test_repeated_reads_are_hits(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice)
            alice.token = None
            first = await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)

            # Entries are kept once a read is known to include the write (the replica
            # replayed it, as the next probe sees), so the first hit may take a moment.
            async def hit() -> bool:
                before = await hits(server)
                await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
                return await hits(server) > before

            await eventually(hit, within=5, interval=0.2)
            before_hits = await hits(server)
            for _ in range(3):
                again = await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
                assert again.content == first.content
                assert again.headers["ETag"] == first.headers["ETag"]
            assert await hits(server) == before_hits + 3

    async def test_the_writer_never_reads_stale_data(self, server: Server) -> None:
        alice = await server.signup()
        await replica_sql("SELECT pg_wal_replay_pause()")  # the worst case: a stale replica
        async with server.client() as http:
            task = await create_task(http, alice, title="v1")
            for i in range(2, 12):
                # Warm the cache with the current state, then write.
                await http.get(f"{TASKS}/{task['id']}", headers=alice.with_token())
                await http.get(TASKS, headers=alice.with_token())
                await patch(http, alice, task["id"], title=f"v{i}")
                for headers in (alice.with_token(), alice.headers):  # with and without token
                    got = await http.get(f"{TASKS}/{task['id']}", headers=headers)
                    assert got.json()["title"] == f"v{i}", (i, headers.keys())
                    page = await http.get(TASKS, headers=headers)
                    assert page.json()["items"][0]["title"] == f"v{i}", (i, headers.keys())

    async def test_a_write_by_someone_else_invalidates_my_view(self, server: Server) -> None:
        alice, admin = await server.signup(), await server.signup("admin")
        async with server.client() as http:
            task = await create_task(http, alice, title="mine")
            alice.token = None
            await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)  # cached
            await http.get(TASKS, headers=admin.headers)  # cached for the admin too
            await patch(http, admin, task["id"], title="changed by an admin")
            got = await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
            assert got.json()["title"] == "changed by an admin"
            bob = await server.signup()
            await patch(http, admin, task["id"], assignee_id=bob.id)
            page = await http.get(TASKS, headers=bob.headers)
            assert [t["id"] for t in page.json()["items"]] == [task["id"]]

    async def test_invalidation_touches_a_few_keys_and_never_scans(self, server: Server) -> None:
        alice = await server.signup()
        prefix = server.env["TASKHUB_REDIS__KEY_PREFIX"]
        client = aioredis.from_url(REDIS_URL)
        try:
            async with server.client() as http:
                task = await create_task(http, alice)
                await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
                await client.config_resetstat()
                await patch(http, alice, task["id"], title="again")
                stats = await client.info("commandstats")
            assert not any(
                name in stats for name in ("cmdstat_keys", "cmdstat_scan", "cmdstat_del")
            )
            marks = [k async for k in client.scan_iter(f"{prefix}cache:*:mark")]
            assert marks  # one watermark per scope, raised by each write
        finally:
            await client.aclose()


class TestInvalidationBatches:
    async def test_concurrent_writes_share_calls_and_each_waits_for_its_marks(self) -> None:
        prefix = f"taskhub-test-batch-{uuid.uuid4().hex[:8]}:"
        store = RedisStore(RedisSettings(url=REDIS_URL, key_prefix=prefix))
        cache = Cache(store, CacheSettings())
        client = aioredis.from_url(REDIS_URL)
        writes = [({"all", f"u:{n % 7}"}, 1_000 + n) for n in range(40)]
        late: list[int] = []

        async def write(scopes: set[str], lsn: int) -> None:
            await cache.invalidate(scopes, lsn)
            # Returned: every mark of this write is up, whatever else is in flight.
            for scope in scopes:
                mark = await client.get(f"{prefix}cache:{scope}:mark")
                if mark is None or mark.decode() < fixed_hex(lsn):
                    late.append(lsn)

        try:
            await cache.invalidate({"all"}, 1)  # loads the script
            await client.config_resetstat()
            # Two waves of 20 concurrent writes, the second while the first one's call
            # is in flight (or just back): one call per wave, not one per write.
            first = [asyncio.create_task(write(*w)) for w in writes[:20]]
            await asyncio.sleep(0)
            await asyncio.gather(*(write(*w) for w in writes[20:]), *first)
            stats = await client.info("commandstats")
            assert stats["cmdstat_evalsha"]["calls"] == 2
            assert late == []
            marks = {
                key.decode(): (await client.get(key)).decode()
                async for key in client.scan_iter(f"{prefix}cache:*:mark")
            }
            assert marks[f"{prefix}cache:all:mark"] == fixed_hex(1_039)
            assert len(marks) == 8
        finally:
            await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")])
            await client.aclose()
            await store.close()


class TestBusyPool:
    async def test_more_concurrent_calls_than_connections_wait_and_succeed(self) -> None:
        # Exhausting the pool is load, not an outage: no call fails and the breaker
        # stays closed (it used to open, turning the cache and rate limits off).
        store = RedisStore(RedisSettings(url=REDIS_URL, max_connections=2))
        try:
            answers = await asyncio.gather(*(store.call(lambda r: r.ping()) for _ in range(50)))
            assert answers == [True] * 50
            assert store.available
        finally:
            await store.close()


class TestRedisDown:
    async def test_the_api_serves_correct_data_and_recovers(self, server: Server) -> None:
        alice = await server.signup()
        async with server.client() as http:
            task = await create_task(http, alice, title="before")
            fail_open = await server.metric(
                "taskhub_ratelimit_decisions_total", outcome="fail_open"
            )
            devstack("stop", "redis")
            started = time.perf_counter()
            for i in range(5):
                await patch(http, alice, task["id"], title=f"without redis {i}")
                got = await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
                assert got.status_code == 200
                assert got.json()["title"] == f"without redis {i}"
                assert "RateLimit-Limit" not in got.headers  # failing open
            assert time.perf_counter() - started < 5
            assert await server.metric("taskhub_redis_up") == 0
            assert (
                await server.metric("taskhub_ratelimit_decisions_total", outcome="fail_open")
                > fail_open
            )
            assert "redis unavailable" in server.log_text()
            assert (await http.get("/health/ready")).status_code == 200

            devstack("start", "redis")
            before = await hits(server)

            async def cache_back() -> bool:
                response = await http.get(f"{TASKS}/{task['id']}", headers=alice.headers)
                assert response.json()["title"] == "without redis 4"
                return await hits(server) > before and "RateLimit-Limit" in response.headers

            await eventually(cache_back, within=10, interval=0.3)
            assert await server.metric("taskhub_redis_up") == 1
