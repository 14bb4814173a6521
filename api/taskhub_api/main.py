"""The FastAPI application: assembly only (routers, middleware, error handlers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from taskhub_api import tracing
from taskhub_api.auth.router import router as auth_router
from taskhub_api.cache import Cache
from taskhub_api.db import Database, DatabaseUnavailable
from taskhub_api.errors.rendering import install_handlers, openapi_with_problems
from taskhub_api.health.router import ready
from taskhub_api.health.router import router as health_router
from taskhub_api.health.schemas import Readiness
from taskhub_api.identity.principal_cache import PrincipalCache
from taskhub_api.identity.verifier import TokenVerifier
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
from taskhub_api.tasks.history_router import router as events_router
from taskhub_api.tasks.router import router as tasks_router
from taskhub_api.users.router import router as users_router
from taskhub_api.webhooks.router import router as webhooks_router


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
    app.state.principal_cache = PrincipalCache(settings.auth.principal_cache_seconds)
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
    install_handlers(app, DatabaseUnavailable)
    app.openapi = partial(openapi_with_problems, app)  # type: ignore[method-assign]

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
        "/health",
        ready,
        methods=["GET"],
        tags=["health"],
        summary="Alias of /health/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: `checks` says why"}},
    )
    # No /metrics here: the public port must not show it. `taskhub api` serves the
    # metrics on a port of its own (observability.serve_metrics).

    app.add_middleware(ResponseHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    tracing.instrument_app(app)  # outermost: the access log line falls inside the span
    return app
