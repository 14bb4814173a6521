"""The FastAPI application: assembly only (routers, middleware, error rendering)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from taskhub_api import tracing
from taskhub_api.auth.router import router as auth_router
from taskhub_api.auth.verifier import TokenVerifier
from taskhub_api.cache import Cache
from taskhub_api.db import CONNECTION_ERRORS, Database
from taskhub_api.errors import AppError
from taskhub_api.events.router import router as events_router
from taskhub_api.health.router import ready
from taskhub_api.health.router import router as health_router
from taskhub_api.kit import heap, internals
from taskhub_api.kit.body_limit import BodyLimitMiddleware
from taskhub_api.kit.response_headers import ResponseHeadersMiddleware
from taskhub_api.kit.responses import JSONBytes
from taskhub_api.kit.routing import add_routers
from taskhub_api.observability import RequestContextMiddleware, configure_logging
from taskhub_api.ratelimit.clientip import ClientAddressResolver
from taskhub_api.ratelimit.limiter import RateLimiter
from taskhub_api.redisstore import RedisStore
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
    errors = []
    for e in exc.errors():
        if e["type"] == "json_invalid":  # loc holds the character position, not a field
            position = e["loc"][-1]
            errors.append(
                {
                    "field": "body",
                    "message": f"is not valid JSON (at character {position})",
                    "type": e["type"],
                }
            )
        else:
            errors.append(
                {"field": _field(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
            )
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(
        422, detail or "The request is invalid.", errors=errors, instance=request.url.path
    )


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return problem(
        exc.status_code, str(exc.detail), headers=dict(exc.headers or {}), instance=request.url.path
    )


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # Expected when the database is down or the pool is exhausted: fail fast with 503,
    # and have the monitor look now rather than at its next tick.
    log.warning("database unavailable: %s", type(exc).__name__, exc_info=exc)
    request.app.state.db.monitor.nudge()
    return problem(
        503,
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": "1"},
        instance=request.url.path,
    )


def _connection_lost(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # SQLAlchemy wraps the driver's error a few levels deep
        if seen is None:
            return False
        if isinstance(seen, CONNECTION_ERRORS):
            return True
        seen = seen.__cause__
    return False


async def _database_error(request: Request, exc: sa_exc.DBAPIError) -> Response:
    # A generic DBAPIError is a lost connection (PgBouncer dropped it) or a bug.
    if exc.connection_invalidated or _connection_lost(exc):
        return await _database_unavailable(request, exc)
    log.error("database error", exc_info=exc)
    return problem(500, "An unexpected error occurred.", instance=request.url.path)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.db = Database(settings.db)
    tracing.instrument_engines(app.state.db.primary, app.state.db.replica)
    app.state.redis = RedisStore(settings.redis)
    app.state.cache = Cache(app.state.redis, settings.cache)
    app.state.rate_limiter = RateLimiter(app.state.redis, enabled=settings.ratelimit.enabled)
    app.state.client_address = ClientAddressResolver(settings.ratelimit.trusted_proxies)
    app.state.token_verifier = TokenVerifier(settings.auth)
    app.state.migrations = SchemaVersion()
    await app.state.db.start()
    heap.settle(settings.gc_gen0_threshold)
    try:
        yield
    finally:
        await app.state.token_verifier.aclose()
        await app.state.redis.close()
        await app.state.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    tracing.setup(settings.tracing.enabled, "api")
    internals.check()  # a fast path on a library version it was not written for: off
    app = FastAPI(
        title="TaskHub",
        version="0.1.0",
        summary="Task management for Kubernetes teams.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
        # FastAPI's OpenTelemetry hooks look up the global providers on every request;
        # metrics come from Prometheus here.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)  # type: ignore[arg-type]
    for unavailable in (
        sa_exc.TimeoutError,
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        *CONNECTION_ERRORS,
        ConnectionError,
    ):
        app.add_exception_handler(unavailable, _database_unavailable)

    # The hot routes first: routing tries routes in order.
    add_routers(
        app,
        tasks_router,
        events_router,
        users_router,
        auth_router,
        webhooks_router,
        health_router,
    )
    app.add_api_route(
        "/health", ready, methods=["GET"], tags=["health"], summary="Alias of /health/ready"
    )
    # No /metrics here: the public port must not show it. `taskhub api` serves the
    # metrics on a port of its own (observability.serve_metrics).

    app.add_middleware(ResponseHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    tracing.instrument_app(app)  # outermost: the access log line falls inside the span
    return app
