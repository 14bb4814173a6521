"""Engines, the two session types and read routing.

``WriteSession`` is bound to the primary: writes and reads that must be fresh.
``ReadSession`` may be bound to a replica. Keeping them distinct types lets the type
checker see which one a function needs. Hot read paths take a ``ReadEngine``: the
replica or the primary, chosen per read from the WAL position the caller must see
(read-your-writes, see docs/data.md) and the replica's health and lag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import asyncpg
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.sql.compiler import SQLCompiler

from taskhub_api.dbhealth import DatabaseMonitor
from taskhub_api.dbpool import pool_class, replace_closed_on_connect, warm_up
from taskhub_api.errors import ServiceUnavailable
from taskhub_api.kit import greenlets, internals, lsn
from taskhub_api.kit.internals import greenlet_spawn
from taskhub_api.settings import DatabaseSettings

if TYPE_CHECKING:
    from sqlalchemy.sql import ClauseElement

    from taskhub_api.cache import Cache

T = TypeVar("T")

DB_READS = Counter("taskhub_db_reads_total", "Reads by the endpoint that served them", ["target"])
_READS_BY = {
    target: DB_READS.labels(target) for target in ("primary", "replica", "fallback", "retry")
}


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (answered 503 with Retry-After). Raised where the
    driver or the pool fails, with the original error as ``__cause__``."""

    def __init__(self, detail: str = "The database is unavailable; retry shortly.") -> None:
        super().__init__(detail, retry_after=1)


# The connection (not the statement) failed: the connection is discarded, and a read
# may be retried on the other endpoint.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,  # closed or broken connection, PgBouncer gave up on it
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # The server refuses a new connection for capacity (max_connections, a role's or a
    # database's connection limit): nothing ran, another endpoint may have room.
    asyncpg.exceptions.TooManyConnectionsError,
    # The server closed the connection while it sat idle in the pool (terminated
    # backend): asyncpg finds its protocol in the wrong state on the next query.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,  # command_timeout
)
# A pooled connection that died while idle (its server or PgBouncer restarted, its
# backend was terminated) fails the next statement sent on it with one of these, and
# that statement did not run: a read meeting one is retried on another connection
# (ReadEngine._read). Not TimeoutError: a slow statement or endpoint would only be
# waited for again.
_DEAD_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)
# A read may also be retried elsewhere after these (raw_connection raises
# DatabaseUnavailable; a timeout bounding the attempt arrives as TimeoutError; a standby
# cancels queries that conflict with replay).
_RETRYABLE_READ_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    DatabaseUnavailable,
    sa_exc.DBAPIError,
    asyncpg.exceptions.SerializationError,
)
_COMMIT_LSN_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    DatabaseUnavailable,
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
)
# The connection cannot be trusted after these (a cancelled query leaves it mid-way).
_ABANDON_CONNECTION: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncio.CancelledError)
COMMIT_LSN_SQL = "SELECT pg_current_wal_insert_lsn()::text"
# Key of WriteSession.info: the cache scopes a transaction touched (set by services,
# retired after the commit by the write-session dependency).
CACHE_SCOPES = "cache_scopes"


# SQLAlchemy's own words for an unreachable database: a pool timeout, and the DBAPI
# error classes its asyncpg adapter gives a refused, lost or closed connection.
_SQLALCHEMY_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
)
# The driver's connection errors, without the builtin OSError and TimeoutError: outside
# raw_connection's block those may come from anything (a bug is not a 503), and count
# only when the driver raised them.
_DRIVER_CONNECTION_ERRORS: tuple[type[BaseException], ...] = tuple(
    error for error in CONNECTION_ERRORS if error not in (OSError, TimeoutError)
)


class _DeadConnection(DatabaseUnavailable):
    """A statement failed because the pooled connection it was sent on had died
    unnoticed (raw_connection): the statement did not run."""


def _raised_in_driver(exc: BaseException) -> bool:
    # A statement on a driver connection (command_timeout, a reset socket) raises the
    # builtin errors from inside asyncpg: its frames are in the traceback.
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False


def _connection_lost(exc: BaseException) -> bool:
    seen: BaseException | None = exc.__cause__
    for _ in range(5):  # SQLAlchemy wraps the driver's error a few levels deep
        if seen is None:
            return False
        if isinstance(seen, CONNECTION_ERRORS):
            return True
        seen = seen.__cause__
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, met around a session or a driver connection, means the database
    cannot be reached: the one place that reads the driver's and SQLAlchemy's errors."""
    if isinstance(exc, (DatabaseUnavailable, *_SQLALCHEMY_UNAVAILABLE, *_DRIVER_CONNECTION_ERRORS)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):  # a lost connection, or a bug
        return exc.connection_invalidated or _connection_lost(exc)
    if isinstance(exc, sa_exc.EmulatedDBAPIException):
        # The asyncpg adapter's PEP 249 error, unwrapped (a pool checkout that could not
        # connect): the driver's error is its cause.
        return _connection_lost(exc)
    return isinstance(exc, OSError | TimeoutError) and _raised_in_driver(exc)


@contextmanager
def database_boundary() -> Iterator[None]:
    """Raises ``DatabaseUnavailable`` (from the original) for an error of the block that
    means the database cannot be reached; anything else passes unchanged."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise DatabaseUnavailable() from exc


class WriteSession(AsyncSession):
    """A session on the primary."""


class ReadSession(AsyncSession):
    """A session that may read from a replica."""


def create_engine(url: str, settings: DatabaseSettings, pool: str = "primary") -> AsyncEngine:
    greenlets.install()  # SQLAlchemy's greenlet bridge reuses its greenlets (a fast path)
    connect_args: dict[str, Any] = {
        "timeout": settings.connect_timeout,
        "command_timeout": settings.command_timeout,
        "statement_cache_size": settings.statement_cache_size,
        "server_settings": {"application_name": "taskhub"},
    }
    if settings.statement_cache_size == 0:
        # SQLAlchemy keeps its own prepared-statement cache on top of asyncpg's.
        connect_args["prepared_statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        poolclass=pool_class(pool),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    replace_closed_on_connect(engine)
    return engine


class Database:
    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.primary = create_engine(settings.url, settings)
        self.replica = (
            create_engine(settings.replica_url, settings, "replica")
            if settings.replica_url
            else self.primary
        )
        self.write_sessions = async_sessionmaker(
            self.primary, class_=WriteSession, expire_on_commit=False, autoflush=False
        )
        self.read_sessions = async_sessionmaker(
            self.replica, class_=ReadSession, expire_on_commit=False, autoflush=False
        )
        self.monitor = DatabaseMonitor(
            settings,
            replica=self.replica is not self.primary,
            on_reconnect=self._reset_pool,
            warm_up=self.warm_up if settings.warm_up_seconds > 0 else None,
        )

    async def start(self) -> None:
        """Probe both endpoints, then keep probing in the background, where the pools
        are warmed as soon as the primary answers (readiness waits for that)."""
        await self.monitor.start()

    async def warm_up(self) -> bool:
        """Opens the primary's pool, and the replica's if it answers, to ``pool_size``
        connections each (``dbpool.warm_up``). False when the primary failed meanwhile:
        the monitor tries again once it answers."""
        engines = {"primary": self.primary}
        if self.monitor.replica is not None and self.monitor.replica.up:
            engines["replica"] = self.replica
        return await warm_up(engines, raw_connection, self.settings)

    async def dispose(self) -> None:
        await self.monitor.stop()
        await self.primary.dispose()
        if self.replica is not self.primary:
            await self.replica.dispose()

    async def _reset_pool(self, node: str) -> None:
        # The endpoint came back after its connections broke: drop the pooled ones
        # rather than let one request each discover they are dead.
        await (self.primary if node == "primary" else self.replica).dispose()

    def ensure_writable(self) -> None:
        """Fail fast while the primary is known to be down (PgBouncer would queue)."""
        if not self.monitor.primary.up:
            raise DatabaseUnavailable("The primary database is unavailable; writes are paused.")

    def reader(self, min_lsn: int = lsn.ZERO) -> ReadEngine:
        """Where a read that must include WAL position ``min_lsn`` runs: the replica if
        it has replayed that far and is not too far behind, else the primary."""
        monitor = self.monitor
        primary_up = monitor.primary.up
        replica = monitor.replica
        if replica is not None and monitor.replica_usable(min_lsn):
            fallback = self.primary if primary_up else None
            return ReadEngine(
                self.replica,
                "replica",
                replica.lsn,
                fallback,
                monitor,
                self.settings.replica_read_timeout,
            )
        # The probe's position minus one: a transaction committing while it was taken
        # may be invisible a moment longer (see docs/data.md). With the primary down
        # too as far as the last probe knows, the read first has the monitor look again
        # (that probe may have caught PgBouncer restarting), then needs the primary.
        return ReadEngine(
            self.primary,
            "primary",
            max(monitor.primary.lsn - 1, 0),
            None,
            monitor,
            recheck=not primary_up,
        )

    def principal_reader(self) -> ReadEngine:
        """Identity and roles: from the primary (a disabled account stops at once), or
        from the replica while the primary is down."""
        monitor = self.monitor
        replica = self.replica if self.replica is not self.primary else None
        replica_up = monitor.replica is not None and monitor.replica.up
        if monitor.primary.up or replica is None or not replica_up:
            # A primary-key lookup: one slower than a probe means the primary is in
            # trouble, and the replica can answer instead.
            fallback = replica if replica_up else None
            return ReadEngine(
                self.primary, "primary", 0, fallback, monitor, self.settings.probe_timeout_seconds
            )
        return ReadEngine(replica, "replica", 0, None, monitor)

    async def commit_lsn(self) -> int | None:
        """The primary's WAL insert position, taken after a commit: at or past that
        commit's record. None when the primary cannot tell right now."""
        try:
            async with (
                asyncio.timeout(self.settings.command_timeout),
                raw_connection(self.primary) as conn,
            ):
                return lsn.parse(await conn.fetchval(COMMIT_LSN_SQL))
        except _COMMIT_LSN_ERRORS:
            self.monitor.nudge()
            return None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteSession]:
        """One unit of work on the primary: commits when the block finishes cleanly,
        else rolls back."""
        async with self.write_sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise


@dataclass(frozen=True, slots=True)
class ReadEngine:
    """The engine one read runs on. ``asof`` is a WAL position its data is known to
    include (what a cache entry filled from it may claim)."""

    engine: AsyncEngine
    target: str  # "primary" or "replica", for metrics
    asof: int
    # Where to retry when the connection to ``engine`` fails (reads are idempotent).
    fallback: AsyncEngine | None
    monitor: DatabaseMonitor
    # Bound of the first attempt when there is a fallback (replica_read_timeout).
    timeout: float | None = None
    # Every node was down at the last probe: probe again first, fail if still so.
    recheck: bool = False

    async def run(self, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``query`` on the driver connection (no ORM, no BEGIN: the hot path)."""
        if self.recheck:
            await self.monitor.recheck()
            if not self.monitor.primary.up:
                raise DatabaseUnavailable(
                    "The primary database is unavailable and the replica has not caught up."
                )
        _READS_BY[self.target].inc()
        if self.fallback is None:
            return await self._read(self.engine, query)
        try:
            async with asyncio.timeout(self.timeout), raw_connection(self.engine) as conn:
                return await query(conn)
        except _RETRYABLE_READ_ERRORS as exc:
            if isinstance(exc.__cause__, sa_exc.TimeoutError):
                raise  # this pool is exhausted: a fast 503, not a read moved elsewhere
            self.monitor.nudge()
        _READS_BY["fallback"].inc()
        return await self._read(self.fallback, query)

    async def _read(
        self, engine: AsyncEngine, query: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        # Reads only: a write must not be sent twice (it may have committed). A read
        # whose pooled connection died unnoticed (discarded by raw_connection) runs
        # again on another. When the server's backends were killed or it restarted,
        # the pool's other idle connections may be dead as well, and not all of them
        # known to be closed yet: as many more tries as it then held, and one on a new
        # connection. A connection that cannot be made is not retried here.
        retries: int | None = None
        while True:
            try:
                async with raw_connection(engine) as conn:
                    return await query(conn)
            except _DeadConnection:
                if retries is None:
                    pool = engine.pool
                    retries = (pool.checkedin() if isinstance(pool, QueuePool) else 0) + 1
                if retries == 0:
                    raise
                retries -= 1
                self.monitor.nudge()
            _READS_BY["retry"].inc()


@dataclass(frozen=True, slots=True)
class Reads:
    """Where one request's reads come from: the response cache, else the replica or
    the primary. Every read includes the client's last write (``client_lsn``, from its
    consistency token) and whatever ``floor`` it asks for."""

    db: Database
    cache: Cache
    client_lsn: int

    def engine(self, floor: int = lsn.ZERO) -> ReadEngine:
        return self.db.reader(max(floor, self.client_lsn))


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement built once, compiled once to the SQL and parameter order of the
    asyncpg driver: what write paths run on the driver connection of their
    transaction (``driver_connection``), skipping SQLAlchemy's per-execution work.
    Statements built per call (updates of the changed columns) go through
    ``session.execute`` instead, which caches their compilation."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, statement: ClauseElement) -> DriverStatement:
        compiled = cast(SQLCompiler, statement.compile(dialect=_ASYNCPG))
        return cls(str(compiled), tuple(compiled.positiontup or ()))

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


_ASYNCPG = asyncpg_dialect()  # type: ignore[no-untyped-call]
# Key of AsyncSession.info: the session transaction and the driver connection under it.
_DRIVER = "driver_connection"


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under ``session``, inside the session's transaction
    (BEGIN is sent now if the session has not sent a statement yet): what runs on it
    commits or rolls back with the session.

    Looked up once per transaction of the session: after a commit the session may be
    on another connection, in a transaction not begun yet. SQLAlchemy's asyncpg
    adapter begins its transaction lazily, on its first statement: with the
    ``driver_begin`` fast path, through its private ``_start_transaction``
    (kit/internals.py, BEGIN alone), else through a statement of its own (``SELECT 1``,
    public API, one more round trip). ``tests/api/test_driver_writes.py`` holds both.
    """
    known = session.info.get(_DRIVER)
    if known is not None and known[0] is session.sync_session.get_transaction():
        driver: asyncpg.Connection = known[1]
        return driver
    connection = await session.connection()
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    if internals.enabled("driver_begin"):
        try:
            await internals.begin_on_adapter(adapted)
        except Exception as exc:
            # Only the connection fails a BEGIN: discard it and fail as SQLAlchemy does
            # for a lost connection (answered 503), not with the adapter's raw error.
            await connection.invalidate(exc)
            raise sa_exc.DBAPIError("BEGIN", None, exc, connection_invalidated=True) from exc
    else:
        await connection.exec_driver_sql("SELECT 1")
    driver = adapted.driver_connection
    session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
    return driver


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the engine's pool, as the bare asyncpg connection (hot paths:
    no ORM, no ``Connection`` object, no BEGIN); discarded if the connection broke.

    The pool's checkout and checkin may await (connect, close), so they run in
    SQLAlchemy's greenlet bridge; the connection itself is used directly. A pooled
    connection its server closed while it sat idle is replaced before use.
    """
    with database_boundary():  # a pool timeout, a refused connection
        pooled = await greenlet_spawn(engine.sync_engine.raw_connection)
        driver = cast("asyncpg.Connection", pooled.driver_connection)  # checked out: connected
        if driver.is_closed():
            pooled, driver = await _replace_closed(engine, pooled)
    try:
        yield driver
    except _ABANDON_CONNECTION as exc:
        # Also when cancelled (a timeout): the connection's state is unknown.
        # Terminate first: SQLAlchemy would try a graceful close for two seconds.
        driver.terminate()
        await greenlet_spawn(pooled.invalidate)
        if isinstance(exc, _DEAD_CONNECTION_ERRORS):
            raise _DeadConnection() from exc
        if isinstance(exc, CONNECTION_ERRORS):  # only the driver ran in the block
            raise DatabaseUnavailable() from exc
        raise
    finally:
        await greenlet_spawn(pooled.close)


async def _replace_closed(
    engine: AsyncEngine, pooled: PoolProxiedConnection
) -> tuple[PoolProxiedConnection, asyncpg.Connection]:
    # After a PgBouncer restart every idle connection is closed: at most all of them,
    # then a discarded one, which reconnects.
    pool = engine.pool
    for _ in range((pool.checkedin() if isinstance(pool, QueuePool) else 0) + 1):
        await greenlet_spawn(_discard, pooled)
        pooled = await greenlet_spawn(engine.sync_engine.raw_connection)
        driver = cast("asyncpg.Connection", pooled.driver_connection)
        if not driver.is_closed():
            break
    return pooled, driver


def _discard(pooled: PoolProxiedConnection) -> None:
    pooled.invalidate()  # its record reconnects when next checked out
    pooled.close()
