"""Routes whose parameters are planned once, at start-up, instead of on every request.

FastAPI resolves an endpoint's dependencies and parameters generically on every
request: for each declared parameter it inspects the annotation again (is it a model,
a sequence, JSON?), works out its aliases and copies its default. On the hot read
paths that costs as much CPU as the database work.

``PlannedRoute`` is an ``APIRoute`` (the endpoint is declared as usual, and the OpenAPI
document comes from that declaration) whose handler runs a plan made once from the
same declaration: per parameter where to read it, under which name, whether it is a
list, and the same validation, with the same errors, as FastAPI's. It plans what the
API's endpoints declare without a body: path, query and header parameters, query
parameter models, the ``Request``, and sub-dependencies that are plain ``async``
callables. Anything else (a body, a form, a dependency with ``yield``, cookies,
``Response`` or ``BackgroundTasks`` parameters, security scopes, dependency overrides)
keeps FastAPI's own handler. ``tests/api/test_planned_routes.py`` checks that both
answer alike.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi._compat import ModelField, get_cached_model_fields, get_missing_field_error
from fastapi._compat.shared import field_annotation_is_sequence, lenient_issubclass
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.params import Param
from fastapi.routing import APIRoute
from pydantic import BaseModel

from taskhub_api.kit.responses import JSONBytes

_UNDEFINED: Any = object()


@dataclass(frozen=True, slots=True)
class _Field:
    """One declared parameter: where it is read from and how it is validated."""

    field: ModelField
    source: str  # "path", "query" or "header"
    alias: str  # the name in the request
    sequence: bool  # a list: every occurrence of the name
    loc: tuple[str, ...]

    @classmethod
    def of(cls, field: ModelField, source: str) -> _Field | None:
        alias = field.field_info.validation_alias or field.alias
        if not isinstance(alias, str):
            return None  # alias choices or paths: FastAPI's own rules apply
        sequence = source != "path" and field_annotation_is_sequence(field.field_info.annotation)
        return cls(field, source, alias, sequence, (source, alias))

    @property
    def name(self) -> str:
        return self.field.name

    def raw(self, params: Any) -> Any:
        value = params.getlist(self.alias) if self.sequence else params.get(self.alias)
        return _UNDEFINED if value is None or (self.sequence and not value) else value

    def solve(self, request: Request) -> tuple[Any, list[Any]]:
        """FastAPI's rules: a missing required value is an error; a missing optional
        one takes (a copy of) its default, validated only if the field says so."""
        raw = self.raw(_params(request, self.source))
        field = self.field
        if raw is _UNDEFINED:
            if field.field_info.is_required():
                return None, [get_missing_field_error(loc=self.loc)]
            default = copy.deepcopy(field.default)
            if not field.field_info.validate_default:
                return default, []
            raw = default
        return field.validate(raw, {}, loc=self.loc)


@dataclass(frozen=True, slots=True)
class _QueryModel:
    """A query parameter model (``Annotated[Model, Query()]``): its fields are read by
    their names, the rest of the query is passed on for the model's ``extra`` policy."""

    field: ModelField
    fields: tuple[_Field, ...]
    aliases: frozenset[str]

    @property
    def name(self) -> str:
        return self.field.name

    def solve(self, request: Request) -> tuple[Any, list[Any]]:
        query = request.query_params
        received: dict[str, Any] = {}
        for field in self.fields:
            raw = field.raw(query)
            if raw is not _UNDEFINED:
                received[field.alias] = raw
        extras: dict[str, list[str]] = {}
        for key, item in query.multi_items():
            if key not in self.aliases:
                extras.setdefault(key, []).append(item)
        for key, items in extras.items():
            received[key] = items[0] if len(items) == 1 else items
        return self.field.validate(received, {}, loc=("query",))


def _params(request: Request, source: str) -> Any:
    if source == "path":
        return request.path_params
    if source == "query":
        return request.query_params
    return request.headers


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to call one dependant, in FastAPI's order: its sub-dependencies (one that
    fails validation is not called), then its path, query and header parameters."""

    call: Callable[..., Coroutine[Any, Any, Any]]
    dependencies: tuple[tuple[str | None, _Plan], ...]
    params: tuple[_Field | _QueryModel, ...]
    request_name: str | None

    async def solve(self, request: Request, errors: list[Any]) -> dict[str, Any] | None:
        """The arguments of ``call``, or None with ``errors`` extended."""
        values: dict[str, Any] = {}
        failed = False
        for name, plan in self.dependencies:
            arguments = await plan.solve(request, errors)
            if arguments is None:
                failed = True
                continue
            solved = await plan.call(**arguments)
            if name is not None:
                values[name] = solved
        for param in self.params:
            value, param_errors = param.solve(request)
            if param_errors:
                errors.extend(param_errors)
                failed = True
            else:
                values[param.name] = value
        if self.request_name is not None:
            values[self.request_name] = request
        return None if failed else values


def _is_async_call(call: Any) -> bool:
    if inspect.isclass(call) or inspect.isasyncgenfunction(call):
        return False
    if inspect.iscoroutinefunction(call):
        return True
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def plan(dependant: Dependant, seen: set[Any] | None = None) -> _Plan | None:
    """The plan of ``dependant``, or None when it declares something not planned here."""
    seen = set() if seen is None else seen
    if (
        not _is_async_call(dependant.call)
        or dependant.body_params
        or dependant.cookie_params
        or dependant.http_connection_param_name
        or dependant.websocket_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.parent_oauth_scopes
    ):
        return None
    dependencies = []
    for sub in dependant.dependencies:
        if sub.call in seen:  # FastAPI would share one result: not planned
            return None
        seen.add(sub.call)
        sub_plan = plan(sub, seen)
        if sub_plan is None:
            return None
        dependencies.append((sub.name, sub_plan))
    params: list[_Field | _QueryModel] = []
    declared = (
        ("path", dependant.path_params),
        ("query", dependant.query_params),
        ("header", dependant.header_params),
    )
    for source, fields in declared:
        for field in fields:
            param = _param(field, source)
            if param is None:
                return None
            params.append(param)
    call = cast(Callable[..., Coroutine[Any, Any, Any]], dependant.call)  # async, checked above
    return _Plan(call, tuple(dependencies), tuple(params), dependant.request_param_name)


def _param(field: ModelField, source: str) -> _Field | _QueryModel | None:
    info = field.field_info
    if not isinstance(info, Param) or info.in_.value != source:
        return None
    annotation = info.annotation
    if lenient_issubclass(annotation, BaseModel):
        config = annotation.model_config
        if source != "query" or config.get("validate_by_name") or config.get("populate_by_name"):
            return None
        fields = [_Field.of(f, "query") for f in get_cached_model_fields(annotation)]
        if any(f is None for f in fields):
            return None
        planned = tuple(f for f in fields if f is not None)
        return _QueryModel(field, planned, frozenset(f.alias for f in planned))
    if any(lenient_issubclass(arg, BaseModel) for arg in getattr(annotation, "__args__", ())):
        return None  # an optional model: FastAPI's own rules apply
    return _Field.of(field, source)


class PlannedRoute(APIRoute):
    """An ``APIRoute`` that solves its parameters by a plan made at start-up."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        planned = None if self.dependency_overrides_provider else plan(self.dependant)
        if planned is None:
            return super().get_route_handler()

        async def endpoint(request: Request) -> Any:
            errors: list[Any] = []
            values = await planned.solve(request, errors)
            if values is None:
                raise RequestValidationError(errors)
            return await planned.call(**values)

        # FastAPI's handler, around an endpoint that takes only the request: it still
        # does the response handling (status code, response model, response class).
        declared = self.dependant
        self.dependant = get_dependant(path=self.path_format, call=endpoint)
        try:
            return super().get_route_handler()
        finally:
            self.dependant = declared


def planned_router(prefix: str, tag: str) -> APIRouter:
    """A router of the API: its routes are ``PlannedRoute``s with full paths, answered
    as ``JSONBytes`` by default. ``add_routers`` puts them on the app."""
    return APIRouter(
        prefix=prefix, tags=[tag], route_class=PlannedRoute, default_response_class=JSONBytes
    )


def add_routers(app: FastAPI, *routers: APIRouter) -> None:
    """The routers' routes, in order, as routes of the app itself.

    Not ``include_router``: it routes through a nested router per include and builds
    each route's handler again in that context, which FastAPI's default handler and
    not the plan would then serve."""
    for router in routers:
        app.router.routes.extend(router.routes)
