"""The FastAPI application: assembly only (routers, middleware, error rendering)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from taskhub_api.auth.router import router as auth_router
from taskhub_api.auth.tokens import BuiltinVerifier
from taskhub_api.db import Database
from taskhub_api.errors import AppError
from taskhub_api.events.router import router as events_router
from taskhub_api.health.router import ready
from taskhub_api.health.router import router as health_router
from taskhub_api.kit.body_limit import BodyLimitMiddleware
from taskhub_api.kit.responses import JSONBytes
from taskhub_api.observability import RequestContextMiddleware, configure_logging
from taskhub_api.schema import SchemaVersion
from taskhub_api.settings import Settings, get_settings
from taskhub_api.tasks.router import router as tasks_router
from taskhub_api.users.router import router as users_router
from taskhub_api.webhooks.router import router as webhooks_router

log = logging.getLogger("taskhub")
PROBLEM = "application/problem+json"
# RFC 9110 names where Python's table still has the older ones.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> JSONBytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _TITLES.get(status) or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    response = JSONBytes(body, status_code=status, headers=headers)
    response.headers["content-type"] = PROBLEM
    return response


def _field(loc: tuple[int | str, ...]) -> str:
    # ("body", "labels", 3) -> "labels[3]"; ("query", "limit") -> "limit";
    # ("header", "if-match") -> "If-Match"
    source, *path = loc or ("body",)
    if source == "header" and path:
        return "-".join(part.capitalize() for part in str(path[0]).split("-"))
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


async def _app_error(request: Request, exc: AppError) -> Response:
    return problem(
        exc.status_code,
        exc.detail,
        title=exc.title,
        errors=exc.errors,
        headers=exc.headers,
        instance=request.url.path,
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = [
        {"field": _field(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(
        422, detail or "The request is invalid.", errors=errors, instance=request.url.path
    )


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return problem(
        exc.status_code, str(exc.detail), headers=dict(exc.headers or {}), instance=request.url.path
    )


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # Expected when the database is down or the pool is exhausted: fail fast with 503.
    log.warning("database unavailable: %s", type(exc).__name__, exc_info=exc)
    return problem(
        503,
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": "1"},
        instance=request.url.path,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.db = Database(settings.db)
    app.state.token_verifier = BuiltinVerifier(settings.auth)
    app.state.migrations = SchemaVersion()
    try:
        yield
    finally:
        await app.state.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="TaskHub",
        version="0.1.0",
        summary="Task management for Kubernetes teams.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )
    app.state.settings = settings
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    for unavailable in (
        sa_exc.TimeoutError,
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        ConnectionError,
        TimeoutError,
    ):
        app.add_exception_handler(unavailable, _database_unavailable)

    for router in (auth_router, users_router, tasks_router, events_router, webhooks_router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(health_router)
    app.add_api_route(
        "/health", ready, methods=["GET"], tags=["health"], summary="Alias of /health/ready"
    )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
