"""OpenTelemetry tracing, on only when ``settings.tracing.enabled`` (by default: when the
standard ``OTEL_*`` variables configure an exporter or an OTLP endpoint).

Off, nothing of OpenTelemetry is imported or installed: no SDK, no instrumentation, no
work in the log formatter; trace context is then neither captured nor propagated, while
the request id still travels with every event and job.

On, every process sets up one tracer provider (exporters from ``OTEL_TRACES_EXPORTER``:
``otlp``, the default, over ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, and ``console``),
instruments Redis and httpx, and the callers instrument what they own: the FastAPI
app, the database engines, Celery (taskhub_workers). The W3C ``traceparent`` of the
span that records an event is stored with its outbox row and travels from there in
the message headers (docs/async.md, "Tracing").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson

from taskhub_api import logcontext

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("taskhub.tracing")
TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"
# Probes and scrapes would be most of the traces.
EXCLUDED_URLS = "/health,/metrics"

_enabled = False
_engines_instrumented = False


def enabled() -> bool:
    return _enabled


def setup(on: bool, component: str) -> bool:
    """Installs the tracer provider and the process-wide instrumentations once per
    process when ``on``; whether tracing is on."""
    global _enabled
    if not on or _enabled:
        return _enabled
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create;
    # attributes given here win, so the default name only when none is configured.
    named = bool(os.environ.get("OTEL_SERVICE_NAME"))
    attributes = {} if named else {SERVICE_NAME: f"taskhub-{component}"}
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    logcontext.span_ids = _current_span_ids
    _enabled = True
    log.info("tracing on (%s)", os.environ.get("OTEL_TRACES_EXPORTER") or "otlp")
    return True


def _exporters() -> list[Any]:
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if name.strip()
    ]
    exporters: list[Any] = []
    for name in names:
        if name == "otlp":
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"  # the specification's default
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporters.append(GrpcExporter())  # endpoint, headers: OTEL_EXPORTER_OTLP_*
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                exporters.append(HttpExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored", name)
    return exporters


def _current_span_ids() -> tuple[str, str] | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def instrument_app(app: Any) -> None:
    """Server spans for a FastAPI app (typed ``Any``: repositories import this module,
    and they never import FastAPI)."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS)


def instrument_engines(*engines: AsyncEngine) -> None:
    """Spans for the statements run through SQLAlchemy (not for the driver statements
    of the hot paths, which bypass it). Once per process: its first database."""
    global _engines_instrumented
    if not _enabled or _engines_instrumented:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    unique = {id(engine): engine.sync_engine for engine in engines}
    SQLAlchemyInstrumentor().instrument(engines=list(unique.values()))
    _engines_instrumented = True


def capture() -> dict[str, str] | None:
    """What an outbox row carries on: the request id and, with tracing on, the current
    span's W3C trace context (``traceparent``, ``tracestate``). None when neither."""
    context: dict[str, str] = {}
    if _enabled:
        from opentelemetry import propagate

        propagate.inject(context)
    request_id = logcontext.request_id_var.get()
    if request_id:
        context["request_id"] = request_id
    return context or None


def message_headers(trace_context: Mapping[str, Any] | str | None) -> dict[str, str]:
    """The AMQP headers that carry a stored trace context on."""
    if isinstance(trace_context, str):  # a connection without a JSON codec
        trace_context = orjson.loads(trace_context)
    if not isinstance(trace_context, Mapping) or not trace_context:
        return {}
    headers = {
        key: str(value)
        for key, value in trace_context.items()
        if key != "request_id" and isinstance(value, str)
    }
    request_id = trace_context.get("request_id")
    if request_id:
        headers[REQUEST_ID] = str(request_id)
    return headers


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) and value else None


@contextmanager
def continued(name: str, headers: Mapping[str, Any] | None) -> Iterator[None]:
    """Runs the block with the request id of ``headers`` and, with tracing on, inside a
    consumer span continuing the trace of their ``traceparent``."""
    carrier = {key: text for key, value in (headers or {}).items() if (text := _text(value))}
    token = logcontext.request_id_var.set(carrier.get(REQUEST_ID))
    try:
        if not _enabled:
            yield
            return
        from opentelemetry import propagate, trace

        parent = propagate.extract(carrier)
        tracer = trace.get_tracer("taskhub")
        with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER):
            yield
    finally:
        logcontext.request_id_var.reset(token)
