from __future__ import annotations

import asyncio

from fastapi import Request
from sqlalchemy import text

from taskhub_api.deps import DatabaseDep
from taskhub_api.health.schemas import Liveness, Readiness
from taskhub_api.kit.responses import JSONBytes
from taskhub_api.kit.routing import planned_router
from taskhub_api.redisstore import RedisStore

router = planned_router("/health", "health")


@router.get("/live", response_model=Liveness)
async def live() -> JSONBytes:
    """The process is up (no dependency is checked)."""
    return JSONBytes({"status": "ok"})


def _degraded(request: Request, db: DatabaseDep) -> dict[str, str]:
    """Dependencies the API can do without: reported, never a reason to be unready."""
    monitor = db.monitor
    if monitor.replica is None:
        replica = "not configured"
    elif not monitor.replica.up:
        replica = "unavailable: reads go to the primary"
    elif not monitor.replica_usable(0):
        replica = f"lagging {monitor.replica_lag()} bytes: reads go to the primary"
    else:
        replica = "ok"
    store: RedisStore = request.app.state.redis
    redis = "ok" if store.available else "unavailable: no cache, rate limits fail open"
    return {"replica": replica, "redis": redis}


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: `checks` says why"}},
)
async def ready(request: Request, db: DatabaseDep) -> JSONBytes:
    """The primary answers, the connection pools are warm and the schema is at the
    revision this code needs."""
    checks = {"database": "ok", "schema": "ok", **_degraded(request, db)}
    if not db.monitor.primary.up:
        checks["database"] = "unavailable: the primary does not answer its probe"
        return JSONBytes({"status": "unavailable", "checks": checks}, status_code=503)
    if not db.monitor.warmed:
        # Until then the first requests would each open a connection (PgBouncer opens
        # its server connections one at a time) and some would time out.
        checks["database"] = "warming up: opening the connection pools"
        return JSONBytes({"status": "unavailable", "checks": checks}, status_code=503)
    try:
        async with asyncio.timeout(2), db.primary.connect() as conn:
            current: set[str] = set()
            if await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
                versions = await conn.execute(text("SELECT version_num FROM alembic_version"))
                current = set(versions.scalars())
    except Exception as exc:  # any failure to answer means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
        return JSONBytes({"status": "unavailable", "checks": checks}, status_code=503)
    migrations = request.app.state.migrations
    if not migrations.satisfied_by(current):
        checks["schema"] = f"at {sorted(current) or 'nothing'}, needs {migrations.head}"
        return JSONBytes({"status": "unavailable", "checks": checks}, status_code=503)
    return JSONBytes({"status": "ok", "checks": checks})
