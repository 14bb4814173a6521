"""The fast paths that use a library's internals (kit/internals.py): each one's setting
off gives the library's own behaviour, a library version other than the one a path was
written for turns it off with one warning, planned routes honour the app's dependency
overrides and leave ``max_concurrency`` to FastAPI, and ``taskhub routes`` says which
routes are planned."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.util.queue import AsyncAdaptedQueue

from taskhub_api import cli
from taskhub_api.db import WriteSession, create_engine, driver_connection
from taskhub_api.dbpool import FairQueue
from taskhub_api.kit import greenlets, internals, routing
from taskhub_api.kit.routing import add_routers, planned_router
from taskhub_api.settings import DatabaseSettings, FastPathSettings
from tests.api.fastpaths import decide_again, fast_paths


class TestSettings:
    def test_every_fast_path_has_a_setting_on_by_default(self) -> None:
        defaults = FastPathSettings()
        assert defaults.enabled
        assert all(getattr(defaults, name) for name in internals.FAST_PATHS)

    def test_one_switch_turns_them_all_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with fast_paths(**dict.fromkeys(internals.FAST_PATHS, True)):
            assert all(internals.check().values())
            monkeypatch.setenv("TASKHUB_FAST_PATHS__ENABLED", "false")
            decide_again()
            assert internals.check() == dict.fromkeys(internals.FAST_PATHS, False)
            monkeypatch.undo()


class TestVersionCheck:
    def test_another_version_falls_back_with_one_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with fast_paths(greenlets=True), pytest.MonkeyPatch.context() as patch:
            written = internals.FAST_PATHS["greenlets"]
            other = dataclasses.replace(written, written_for="2.0.0")
            patch.setitem(internals.FAST_PATHS, "greenlets", other)
            decide_again()
            with caplog.at_level(logging.WARNING, "taskhub.internals"):
                internals.check()
                internals.check()
                greenlets.install()
            assert internals.enabled("greenlets") is False
            assert internals.greenlet_class() is internals.own_greenlet_class()
            warnings = [r for r in caplog.records if r.name == "taskhub.internals"]
            assert len(warnings) == 1
            assert "greenlets" in warnings[0].getMessage()
            assert "2.0.0" in warnings[0].getMessage()

    def test_the_recorded_versions_are_the_installed_ones(self) -> None:
        for path in internals.FAST_PATHS.values():
            assert path.installed == path.written_for, path


class TestGreenlets:
    async def test_off_sqlalchemy_runs_its_own_greenlets(self, database_url: str) -> None:
        with fast_paths(greenlets=False):
            engine = create_engine(database_url, DatabaseSettings(url=database_url))
            try:
                assert internals.greenlet_class() is internals.own_greenlet_class()
                async with engine.connect() as conn:
                    assert await conn.scalar(text("SELECT 1")) == 1
            finally:
                await engine.dispose()

    async def test_on_greenlet_spawn_reuses_workers(self, database_url: str) -> None:
        with fast_paths(greenlets=True):
            engine = create_engine(database_url, DatabaseSettings(url=database_url))
            await engine.dispose()
            assert internals.greenlet_class() is greenlets.Spawn


class TestPool:
    @pytest.mark.parametrize(("fair", "queue"), [(True, FairQueue), (False, AsyncAdaptedQueue)])
    async def test_the_pool_queue(self, database_url: str, fair: bool, queue: type[Any]) -> None:
        with fast_paths(fair_pool=fair):
            engine = create_engine(database_url, DatabaseSettings(url=database_url))
        try:
            assert type(internals.pool_queue(engine.pool)) is queue
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        finally:
            await engine.dispose()


class TestDriverBegin:
    @pytest.mark.parametrize("on", [True, False])
    async def test_driver_statements_run_in_the_session_transaction(
        self, database_url: str, on: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        begun: list[object] = []
        private = internals.begin_on_adapter

        async def spy(adapted: Any) -> None:
            begun.append(adapted)
            await private(adapted)

        monkeypatch.setattr(internals, "begin_on_adapter", spy)
        engine = create_engine(database_url, DatabaseSettings(url=database_url))
        sessions = async_sessionmaker(engine, class_=WriteSession)
        try:
            with fast_paths(driver_begin=on):
                async with sessions() as session:
                    driver = await driver_connection(session)
                    on_driver = await driver.fetchval("SELECT txid_current()")
                    in_session = await session.scalar(text("SELECT txid_current()"))
                    await session.rollback()
        finally:
            await engine.dispose()
        assert on_driver == in_session
        assert len(begun) == (1 if on else 0)


async def _value() -> int:
    return 1


async def _limited(request: Request) -> AsyncIterator[int]:
    state = request.app.state
    state.running += 1
    state.most = max(state.most, state.running)
    await asyncio.sleep(0.05)
    state.running -= 1
    yield 1


def _app() -> FastAPI:
    router = planned_router("/x", "x")

    @router.get("/value")
    async def value(v: Annotated[int, Depends(_value)]) -> dict[str, int]:
        return {"value": v}

    @router.get("/limited")
    async def limited(
        v: Annotated[int, Depends(_limited, max_concurrency=1)],
    ) -> dict[str, int]:
        return {"value": v}

    app = FastAPI()
    app.state.running = app.state.most = 0
    add_routers(app, router)
    return app


def _route(app: FastAPI, path: str) -> routing.PlannedRoute:
    route = next(r for r in app.routes if getattr(r, "path", None) == path)
    assert isinstance(route, routing.PlannedRoute)
    return route


class TestPlannedRoutes:
    async def test_off_every_route_keeps_fastapis_handler(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        solved: list[object] = []
        monkeypatch.setattr(routing._Plan, "solve", lambda *a: solved.append(a))
        with fast_paths(planned_routes=False):
            app = _app()
        assert _route(app, "/x/value").not_planned == "planned routes are off"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            assert (await c.get("/x/value")).json() == {"value": 1}
        assert solved == []

    async def test_a_planned_route_honours_the_apps_dependency_overrides(self) -> None:
        with fast_paths(planned_routes=True):
            app = _app()
        assert _route(app, "/x/value").not_planned is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            assert (await c.get("/x/value")).json() == {"value": 1}

            async def two() -> int:
                return 2

            app.dependency_overrides[_value] = two
            assert (await c.get("/x/value")).json() == {"value": 2}
            app.dependency_overrides.clear()
            assert (await c.get("/x/value")).json() == {"value": 1}

    async def test_max_concurrency_keeps_fastapis_handler_and_its_limit(self) -> None:
        with fast_paths(planned_routes=True):
            app = _app()
        assert _route(app, "/x/limited").not_planned == "a dependency with max_concurrency"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            answers = await asyncio.gather(*(c.get("/x/limited") for _ in range(3)))
        assert [a.json() for a in answers] == [{"value": 1}] * 3
        assert app.state.most == 1


class TestRoutesCommand:
    def test_lists_each_route_and_whether_it_is_planned(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with fast_paths(planned_routes=True):
            cli.main(["routes"])
        lines = capsys.readouterr().out.splitlines()
        rows = {tuple(line.split()[:3]): line for line in lines[:-1]}
        assert rows[("GET", "/api/v1/tasks", "list_tasks")].endswith(" planned")
        assert rows[("GET", "/api/v1/tasks/{task_id}", "get_task")].endswith(" planned")
        assert (
            "not planned: a body other than one JSON model"
            in rows[("POST", "/api/v1/auth/token", "token")]
        )
        assert lines[-1].endswith(f"of {len(rows)} routes planned")
