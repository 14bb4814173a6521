"""Background probes of the primary and the replica.

Every ``health_interval_seconds`` each endpoint is asked for its WAL position, over a
connection of its own and within ``probe_timeout_seconds``. The answers decide where a
read goes (replica only when it has replayed far enough), make writes fail fast while
the primary is gone (PgBouncer would otherwise queue them), drive readiness, and
reset an engine's pool once its endpoint came back (its pooled connections died).

The same loop warms the pools once, as soon as the primary first answers, and probes
nothing meanwhile: the warm-up holds a pool's worth of PgBouncer server connections,
and a probe queued behind it would time out and reset the very pool being warmed.
Readiness waits for ``warmed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import make_url

from taskhub_api.kit import lsn
from taskhub_api.settings import DatabaseSettings

log = logging.getLogger("taskhub.db")

DB_UP = Gauge("taskhub_db_up", "1 while the endpoint answers its probe", ["node"])


class ReplicaLag(Collector):
    """``taskhub_db_replica_lag_bytes``, with no sample while the lag is unknown (either
    node down, no replica): a gauge would go on reporting the last lag it saw."""

    def __init__(self) -> None:
        self.value: int | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "taskhub_db_replica_lag_bytes", "WAL bytes the replica has yet to replay"
        )
        if self.value is not None:
            family.add_metric([], self.value)
        yield family


REPLICA_LAG = ReplicaLag()
REGISTRY.register(REPLICA_LAG)

# The primary's insert position; fails on a standby, which cannot take writes.
PRIMARY_PROBE = "SELECT pg_current_wal_insert_lsn()::text"
REPLICA_PROBE = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_insert_lsn() END)::text"
)


def driver_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(slots=True)
class Node:
    """What the last probe of one endpoint found."""

    name: str
    dsn: str
    query: str
    up: bool = False
    lsn: int = 0
    checked_at: float = 0.0
    conn: asyncpg.Connection | None = field(default=None, repr=False)
    # A probe failed since the pool was last reset: reset it when the node answers.
    broken: bool = False


# A warm-up failing this often although the primary answers its probes will not do
# better: serve cold rather than stay unready.
WARM_UP_ATTEMPTS = 5
Reset = Callable[[str], Awaitable[None]]
WarmUp = Callable[[], Awaitable[bool]]


class DatabaseMonitor:
    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        replica: bool,
        on_reconnect: Reset | None = None,
        warm_up: WarmUp | None = None,
    ) -> None:
        self._interval = settings.health_interval_seconds
        self._timeout = settings.probe_timeout_seconds
        self.max_lag = settings.max_replica_lag_bytes
        self.primary = Node("primary", driver_dsn(settings.url), PRIMARY_PROBE)
        self.replica = (
            Node("replica", driver_dsn(settings.replica_url), REPLICA_PROBE)
            if replica and settings.replica_url
            else None
        )
        self._on_reconnect = on_reconnect
        self._warm_up = warm_up
        # The pools were warmed (or there is nothing to warm): ready to serve.
        self.warmed = warm_up is None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Done when a probe round that started after it was asked for has ended.
        self._next_round: asyncio.Future[None] | None = None

    @property
    def nodes(self) -> list[Node]:
        return [n for n in (self.primary, self.replica) if n is not None]

    def replica_lag(self) -> int | None:
        if self.replica is None or not (self.replica.up and self.primary.up):
            return None
        return max(0, self.primary.lsn - self.replica.lsn)

    def replica_usable(self, min_lsn: int) -> bool:
        """The replica answers, has replayed ``min_lsn`` and (while the primary is up)
        is no further behind than allowed."""
        replica = self.replica
        if replica is None or not replica.up or replica.lsn < min_lsn:
            return False
        lag = self.replica_lag()
        return lag is None or lag <= self.max_lag

    async def start(self) -> None:
        await self.probe_all()
        self._task = asyncio.create_task(self._run(), name="taskhub-db-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for node in self.nodes:
            await self._close(node)

    def nudge(self) -> None:
        """Probe now (a request just saw a connection error)."""
        self._wake.set()

    async def recheck(self) -> None:
        """Probe now and wait for the outcome, at most ``probe_timeout_seconds``: a
        request that found every node down asks whether that is still so (the last
        probe may have caught PgBouncer restarting a moment ago)."""
        if self._task is None or self._task.done():
            return
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
        round_ = self._next_round
        self.nudge()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(round_), self._timeout)

    async def _run(self) -> None:
        attempts = 0  # of the warm-up while the primary answered its probes
        while True:
            if not self.warmed and self.primary.up and self._warm_up is not None:
                attempts += 1
                try:
                    self.warmed = await self._warm_up()  # bounded; False: try again
                except Exception:
                    log.exception("warming the connection pools failed unexpectedly")
                    self.warmed = True  # serve cold rather than never
                if not self.warmed and attempts >= WARM_UP_ATTEMPTS:
                    log.warning("connection pools not warmed (%d attempts): serving", attempts)
                    self.warmed = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            waiting, self._next_round = self._next_round, None
            try:
                await self.probe_all()
            except Exception:  # never let the monitor die
                log.exception("database probe failed unexpectedly")
            finally:
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(node) for node in self.nodes))
        REPLICA_LAG.value = self.replica_lag()

    async def _probe(self, node: Node) -> None:
        for attempt in (1, 2):
            fresh = node.conn is None
            try:
                async with asyncio.timeout(self._timeout):
                    if node.conn is None:
                        node.conn = await asyncpg.connect(
                            node.dsn,
                            statement_cache_size=0,
                            server_settings={"application_name": "taskhub-monitor"},
                        )
                    value = await node.conn.fetchval(node.query)
                if value is None:
                    raise asyncpg.InterfaceError(f"{node.name} reports no WAL position")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await self._close(node)
                # An old connection may have died alone (PgBouncer restarted): one more
                # try on a fresh one. A fresh one failing means the endpoint is down.
                if fresh or attempt == 2:
                    self._mark_down(node, exc)
                    return
                continue
            await self._mark_up(node, lsn.parse(value))
            return

    async def _mark_up(self, node: Node, position: int) -> None:
        came_back = not node.up and node.checked_at > 0
        node.up, node.lsn, node.checked_at = True, position, time.monotonic()
        DB_UP.labels(node.name).set(1)
        if node.broken:
            node.broken = False
            if self._on_reconnect is not None:
                await self._on_reconnect(node.name)
        if came_back:
            log.warning("%s database is available again", node.name)

    def _mark_down(self, node: Node, exc: BaseException) -> None:
        node.broken = True
        node.checked_at = time.monotonic()
        DB_UP.labels(node.name).set(0)
        if node.up:
            log.warning("%s database unavailable: %s", node.name, type(exc).__name__)
        node.up = False

    async def _close(self, node: Node) -> None:
        conn, node.conn = node.conn, None
        if conn is not None:
            node.broken = True
            conn.terminate()
