"""Trace context in the outbox, with tracing off (the default, and the tests' API): the
request id is recorded with each event; a client's ``traceparent`` is not."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_api import logcontext, tracing
from taskhub_api.db import Database
from taskhub_api.observability import JSONFormatter, request_id_var
from taskhub_api.settings import Settings, otel_exporting
from tests.support.users import NewUser

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def trace_contexts(app: FastAPI) -> list[object]:
    db: Database = app.state.db
    async with db.primary.connect() as conn:
        rows = await conn.execute(
            text("SELECT o.trace_context FROM outbox o JOIN event e ON e.id = o.event_id")
        )
        return list(rows.scalars())


class TestTracingSettings:
    @pytest.mark.parametrize(
        ("env", "on"),
        [
            ({}, False),
            ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
            ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
            ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
            ({"OTEL_TRACES_EXPORTER": "console"}, True),
            ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
            ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ],
    )
    def test_on_when_the_otel_variables_configure_an_exporter(
        self, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], on: bool
    ) -> None:
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_TRACES_EXPORTER",
            "OTEL_SDK_DISABLED",
            "TASKHUB_TRACING__ENABLED",
        ):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert otel_exporting() is on
        assert Settings().tracing.enabled is on

    def test_the_taskhub_flag_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        monkeypatch.setenv("TASKHUB_TRACING__ENABLED", "false")
        assert Settings().tracing.enabled is False


class TestOutboxTraceContext:
    async def test_the_request_id_is_recorded_and_no_trace_context_when_off(
        self, app: FastAPI, client: httpx.AsyncClient, new_user: NewUser
    ) -> None:
        assert not tracing.enabled()
        owner = await new_user()
        response = await client.post(
            "/api/v1/tasks",
            json={"title": "Traced"},
            headers={**owner.headers, "X-Request-ID": "req-outbox-1", "traceparent": TRACEPARENT},
        )
        assert response.status_code == 201, response.text
        assert await trace_contexts(app) == [{"request_id": "req-outbox-1"}]

    def test_message_headers_carry_what_was_recorded(self) -> None:
        assert tracing.message_headers(None) == {}
        assert tracing.message_headers({"request_id": "r1"}) == {"x-request-id": "r1"}
        assert tracing.message_headers(
            orjson.dumps({"traceparent": TRACEPARENT, "request_id": "r2"}).decode()
        ) == {"traceparent": TRACEPARENT, "x-request-id": "r2"}


class TestLogLines:
    def _line(self) -> dict[str, object]:
        record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": "hi"})
        parsed: dict[str, object] = orjson.loads(JSONFormatter().format(record))
        return parsed

    def test_the_request_id_always_and_span_ids_only_from_the_tracing_hook(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = request_id_var.set("req-log-1")
        try:
            line = self._line()
            assert line["request_id"] == "req-log-1"
            assert "trace_id" not in line
            monkeypatch.setattr(logcontext, "span_ids", lambda: ("a" * 32, "b" * 16))
            line = self._line()
            assert (line["trace_id"], line["span_id"]) == ("a" * 32, "b" * 16)
        finally:
            request_id_var.reset(token)
