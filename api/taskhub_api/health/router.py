from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import text

from taskhub_api.deps import DatabaseDep
from taskhub_api.kit.responses import JSONBytes

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> JSONBytes:
    """The process is up (no dependency is checked)."""
    return JSONBytes({"status": "ok"})


@router.get("/ready")
async def ready(request: Request, db: DatabaseDep) -> JSONBytes:
    """The database answers and its schema is at the revision this code needs."""
    checks = {"database": "ok", "schema": "ok"}
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
