"""SQLAlchemy's greenlet bridge on reused workers (``taskhub_api.kit.greenlets``): the
contract ``install()`` keeps with SQLAlchemy's pinned ``greenlet_spawn`` and ``await_``.

The greenlet tests need no database; ``TestOnTheDatabase`` runs a real engine on the
session's PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest
from greenlet import getcurrent, greenlet  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util.concurrency import await_, greenlet_spawn, in_greenlet

from taskhub_api.db import create_engine
from taskhub_api.kit import greenlets, internals
from taskhub_api.settings import DatabaseSettings
from tests.api.fastpaths import fast_paths

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")
HELD: contextvars.ContextVar[object] = contextvars.ContextVar("HELD")
Worker = greenlets._Worker


@pytest.fixture(autouse=True)
def idle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Worker]]:
    """Installed (whatever the run's setting), with an idle list of the test's own:
    workers left by other tests stay out of its counts."""
    workers: list[Worker] = []
    monkeypatch.setattr(greenlets._idle, "workers", workers)
    with fast_paths(greenlets=True):
        yield workers


def trips(value: int, *, times: int = 3) -> tuple[list[int], list[greenlet]]:
    """``times`` round trips through ``await_``; the values and where each ran."""
    values, ran_on = [], []
    for i in range(times):
        assert in_greenlet()
        ran_on.append(getcurrent())
        values.append(await_(asyncio.sleep(0, result=value + i)))
    return values, ran_on


class TestReuse:
    async def test_calls_run_one_after_another_on_one_worker(self, idle: list[Worker]) -> None:
        ran_on: list[greenlet] = []
        for call in range(10):
            values, where = await greenlet_spawn(trips, call * 10, times=4)
            assert values == [call * 10 + i for i in range(4)]
            ran_on += where
        # SQLAlchemy's own class is a new greenlet per call; here all 40 round trips of
        # the 10 calls ran in one worker, which now waits for the next call.
        worker = ran_on[0]
        assert isinstance(worker, Worker)
        assert all(g is worker for g in ran_on)
        assert idle == [worker]
        assert not worker.dead

    async def test_a_function_that_never_awaits(self) -> None:
        def add(a: int, b: int = 0) -> tuple[int, bool]:
            return a + b, in_greenlet()

        assert await greenlet_spawn(add, 2, b=3) == (5, True)
        # greenlet_spawn still tells a call that awaited nothing from one that did.
        with pytest.raises(sa_exc.AwaitRequired):
            await greenlet_spawn(add, 1, _require_await=True)
        values, _ = await greenlet_spawn(trips, 7, times=1, _require_await=True)
        assert values == [7]

    async def test_a_thread_has_workers_of_its_own(self, idle: list[Worker]) -> None:
        def in_own_loop() -> tuple[list[int], int]:
            values, _ = asyncio.run(greenlet_spawn(trips, 5))
            return values, len(greenlets._idle.workers)

        assert await asyncio.to_thread(in_own_loop) == ([5, 6, 7], 1)
        assert idle == []  # this thread's list: a greenlet never switches across threads
        await greenlet_spawn(trips, 1)
        assert len(idle) == 1


class TestErrors:
    @pytest.mark.parametrize("awaits", [0, 2])
    async def test_an_error_of_the_function_reaches_the_caller(
        self, idle: list[Worker], awaits: int
    ) -> None:
        ran_on: list[greenlet] = []

        def fail(message: str) -> None:
            ran_on.append(getcurrent())
            for _ in range(awaits):
                await_(asyncio.sleep(0))
            raise LookupError(message)

        with pytest.raises(LookupError, match=r"^no such row$") as caught:
            await greenlet_spawn(fail, "no such row")
        assert type(caught.value) is LookupError
        assert any(entry.name == "fail" for entry in caught.traceback)
        # The worker is not spoiled: it runs the next call.
        assert idle == ran_on
        values, where = await greenlet_spawn(trips, 1)
        assert values == [1, 2, 3]
        assert set(where) == set(ran_on)

    async def test_the_chain_of_an_error_is_kept(self) -> None:
        """As with SQLAlchemy's own greenlet (and a direct call): the exception the
        function was handling when it raised stays its ``__context__``, even when the
        caller awaits ``greenlet_spawn`` while handling another one."""

        async def missing() -> None:
            raise KeyError("awaited")

        def fail_again() -> None:
            raise ValueError("during handling")

        def after_an_await() -> None:
            try:
                await_(missing())
            except KeyError:
                fail_again()

        def after_its_own_error() -> None:
            try:
                raise KeyError("its own")
            except KeyError:
                fail_again()

        for fn in (after_an_await, after_its_own_error):
            with pytest.raises(ValueError, match="during handling") as caught:
                try:
                    raise OSError("the caller's")
                except OSError:
                    await greenlet_spawn(fn)
            context = caught.value.__context__
            assert isinstance(context, KeyError), f"{fn.__name__}: __context__ is {context!r}"

    async def test_an_error_of_an_awaited_coroutine_reaches_the_function(self) -> None:
        raised: list[BaseException] = []

        async def refuse() -> None:
            await asyncio.sleep(0)
            error = ConnectionResetError("peer went away")
            raised.append(error)
            raise error

        def recover() -> tuple[str, list[int]]:
            try:
                await_(refuse())
            except ConnectionResetError as exc:
                assert exc is raised[-1]
                # Still in the call: it goes on awaiting.
                return f"recovered: {exc}", trips(10, times=2)[0]
            return "not raised", []

        assert await greenlet_spawn(recover) == ("recovered: peer went away", [10, 11])

        def give_up() -> None:
            await_(refuse())

        with pytest.raises(ConnectionResetError, match="peer went away") as caught:
            await greenlet_spawn(give_up)
        assert caught.value is raised[-1]


class TestCancellation:
    async def test_a_cancelled_call_raises_and_the_worker_goes_on(self, idle: list[Worker]) -> None:
        started = asyncio.Event()
        seen: list[str] = []
        ran_on: list[greenlet] = []

        def sleeper() -> str:
            ran_on.append(getcurrent())
            started.set()
            try:
                await_(asyncio.sleep(10))
            except asyncio.CancelledError:
                seen.append("cancelled")  # delivered into the function, as SQLAlchemy's
                raise
            return "woke up"

        task = asyncio.create_task(greenlet_spawn(sleeper))
        await started.wait()
        assert idle == []  # busy
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert seen == ["cancelled"]
        assert idle == ran_on

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await greenlet_spawn(sleeper)
        assert seen == ["cancelled"] * 2
        values, where = await greenlet_spawn(trips, 3)
        assert values == [3, 4, 5]
        assert set(where) == set(ran_on)


class TestContextVariables:
    async def test_the_function_runs_in_the_callers_context(self, idle: list[Worker]) -> None:
        def read_then_set() -> str:
            seen = VAR.get()
            VAR.set("set inside")
            await_(asyncio.sleep(0))
            return seen

        token = VAR.set("the caller's")
        try:
            assert await greenlet_spawn(read_then_set) == "the caller's"
            # The caller's own context, as with SQLAlchemy's greenlet (not a copy).
            assert VAR.get() == "set inside"
        finally:
            VAR.reset(token)
        assert idle and all(worker.gr_context is None for worker in idle)

    async def test_concurrent_calls_each_see_their_own(self, idle: list[Worker]) -> None:
        def read_around_awaits() -> list[str]:
            seen = [VAR.get()]
            for _ in range(3):
                await_(asyncio.sleep(0))
                seen.append(VAR.get())
            return seen

        async def call(i: int) -> list[str]:
            VAR.set(f"task {i}")
            return await greenlet_spawn(read_around_awaits)

        results = await asyncio.gather(*(call(i) for i in range(20)))
        assert results == [[f"task {i}"] * 4 for i in range(20)]
        assert len(idle) == 20
        # An idle worker holds no context: the finished calls' values can be freed.
        assert all(worker.gr_context is None for worker in idle)

    async def test_an_idle_worker_keeps_nothing_of_the_call(self, idle: list[Worker]) -> None:
        class Payload:
            pass

        async def call() -> weakref.ref[Payload]:
            payload = Payload()
            HELD.set(payload)
            assert await greenlet_spawn(HELD.get) is payload
            return weakref.ref(payload)

        held = await asyncio.create_task(call())
        await asyncio.sleep(0)  # the loop lets go of the finished task (and its context)
        gc.collect()
        assert len(idle) == 1
        assert held() is None


class TestConcurrency:
    @pytest.mark.parametrize("calls", [50, greenlets.MAX_IDLE + 16])
    async def test_concurrent_calls_get_their_own_results(
        self, idle: list[Worker], calls: int
    ) -> None:
        results = await asyncio.gather(
            *(greenlet_spawn(trips, i * 100, times=5) for i in range(calls))
        )
        workers: set[greenlet] = set()
        for i, (values, ran_on) in enumerate(results):
            assert values == [i * 100 + k for k in range(5)]
            assert all(g is ran_on[0] for g in ran_on)  # one call, one worker
            workers.add(ran_on[0])
        assert len(workers) == calls  # all in flight at once: never a shared worker
        assert len(idle) == min(calls, greenlets.MAX_IDLE)
        assert set(idle) <= workers
        assert sum(worker.dead for worker in workers) == calls - len(idle)

    async def test_workers_beyond_max_idle_end(
        self, idle: list[Worker], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(greenlets, "MAX_IDLE", 1)
        results = await asyncio.gather(*(greenlet_spawn(trips, i * 10) for i in range(3)))
        assert [values for values, _ in results] == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
        workers = [ran_on[0] for _, ran_on in results]
        assert len(set(workers)) == 3
        assert len(idle) == 1 and idle[0] in workers and not idle[0].dead
        assert sorted(worker.dead for worker in workers) == [False, True, True]
        _, where = await greenlet_spawn(trips, 0)
        assert set(where) == {idle[0]}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the project's factory, which installs the workers itself; a small
    pool, so that concurrent sessions wait for connections (an await_ in the pool)."""
    internals.set_greenlet_class(None)
    db = create_engine(database_url, DatabaseSettings(url=database_url, pool_size=2))
    assert internals.greenlet_class() is greenlets.Spawn
    try:
        yield db
    finally:
        await db.dispose()


class TestOnTheDatabase:
    async def test_statements_and_transactions(
        self, engine: AsyncEngine, idle: list[Worker]
    ) -> None:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 41 + 1")) == 42
            await conn.execute(text("CREATE TEMPORARY TABLE greenlet_probe (n int)"))
            await conn.commit()
            async with conn.begin() as tx:
                await conn.execute(text("INSERT INTO greenlet_probe VALUES (1), (2)"))
                assert await conn.scalar(text("SELECT count(*) FROM greenlet_probe")) == 2
                await tx.rollback()
            assert await conn.scalar(text("SELECT count(*) FROM greenlet_probe")) == 0
            await conn.rollback()

        async with AsyncSession(engine) as session:
            with pytest.raises(LookupError):
                async with session.begin():
                    await session.execute(text("CREATE TABLE greenlet_rolled_back (n int)"))
                    raise LookupError("roll it back")
            exists = text("SELECT to_regclass('greenlet_rolled_back') IS NOT NULL")
            assert await session.scalar(exists) is False
        assert idle  # the engine's work ran on workers
        assert all(worker.gr_context is None for worker in idle)

    async def test_a_statement_error_leaves_connection_and_pool_usable(
        self, engine: AsyncEngine
    ) -> None:
        async with engine.connect() as conn:
            with pytest.raises(sa_exc.DBAPIError, match="division by zero"):
                await conn.execute(text("SELECT 1/0"))
            await conn.rollback()
            assert await conn.scalar(text("SELECT 2")) == 2
        async with AsyncSession(engine) as session:
            with pytest.raises(sa_exc.DBAPIError, match="division by zero"):
                await session.execute(text("SELECT 1/0"))
            await session.rollback()
            assert await session.scalar(text("SELECT 3")) == 3

    async def test_cancelled_statements_leave_the_pool_usable(self, engine: AsyncEngine) -> None:
        for _ in range(3):  # more than the pool holds: no connection is lost to it
            async with engine.connect() as conn:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await conn.execute(text("SELECT pg_sleep(10)"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 4")) == 4

    async def test_concurrent_sessions(self, engine: AsyncEngine, idle: list[Worker]) -> None:
        async def work(i: int) -> list[int]:
            async with AsyncSession(engine) as session, session.begin():
                query = text("SELECT CAST(:n AS int) FROM pg_sleep(0.001)")
                return [await session.scalar(query, {"n": i * 10 + k}) for k in range(3)]

        results = await asyncio.gather(*(work(i) for i in range(10)))
        assert results == [[i * 10 + k for k in range(3)] for i in range(10)]
        assert 1 <= len(idle) <= greenlets.MAX_IDLE
