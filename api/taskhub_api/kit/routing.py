"""Routes whose parameters are planned once, at start-up, instead of on every request.

FastAPI resolves an endpoint's dependencies and parameters generically on every
request: for each declared parameter it inspects the annotation again (is it a model,
a sequence, JSON?), works out its aliases and copies its default. On the hot read
paths that costs as much CPU as the database work.

``PlannedRoute`` is an ``APIRoute`` (the endpoint is declared as usual, and the OpenAPI
document comes from that declaration) whose handler runs a plan made once from the
same declaration: per parameter where to read it, under which name, whether it is a
list, and the same validation, with the same errors, in the same order, as FastAPI's.
It plans what the API's endpoints declare: path, query and header parameters, query
parameter models, the ``Request``, one JSON body (FastAPI still reads and parses it),
and ``async`` dependencies, including ones that ``yield`` (FastAPI's own code runs
those, on the exit stack of their scope). Anything else (forms, cookies, several
bodies, sync dependencies, dependencies of a dependency that yields, a dependency used
twice, ``Response``, ``BackgroundTasks`` or security-scope parameters, dependency
overrides) keeps FastAPI's own handler. ``tests/api/test_planned_routes.py`` sends the
same requests through both and requires the same answers.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi._compat import ModelField, get_cached_model_fields, get_missing_field_error
from fastapi._compat.shared import field_annotation_is_sequence, lenient_issubclass
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import _solve_generator, get_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.params import Body, Param
from fastapi.routing import APIRoute
from pydantic import BaseModel

from taskhub_api.kit.responses import JSONBytes


class _Undefined:
    """No value received. Survives FastAPI's copy of a default (``deepcopy``)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Undefined:
        return self


_UNDEFINED: Any = _Undefined()


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
        return _validate(self.field, self.raw(_params(request, self.source)), self.loc)


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


def _validate(field: ModelField, raw: Any, loc: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """FastAPI's rules: a missing required value is an error; a missing optional one
    takes (a copy of) its default, validated only if the field says so."""
    if raw is _UNDEFINED:
        if field.field_info.is_required():
            return None, [get_missing_field_error(loc=loc)]
        default = copy.deepcopy(field.default)
        if not field.field_info.validate_default:
            return default, []
        raw = default
    return field.validate(raw, {}, loc=loc)


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

    dependant: Dependant
    dependencies: tuple[tuple[str | None, _Plan], ...]
    params: tuple[_Field | _QueryModel, ...]
    request_name: str | None
    body: ModelField | None  # the endpoint's JSON body
    # For a dependency that yields: the scope key of the exit stack it finishes with.
    exit_stack: str | None

    @property
    def call(self) -> Callable[..., Any]:
        return cast(Callable[..., Any], self.dependant.call)

    async def solve(
        self, request: Request, errors: list[Any], body: Any = _UNDEFINED
    ) -> dict[str, Any] | None:
        """The arguments of ``call``, or None with ``errors`` extended. ``body``: what
        FastAPI read as the request's body (parsed if JSON), checked last, as FastAPI
        does."""
        values: dict[str, Any] = {}
        failed = False
        for name, plan in self.dependencies:
            arguments = await plan.solve(request, errors)
            if arguments is None:
                failed = True
                continue
            solved = await plan.resolve(request, arguments)
            if name is not None:
                values[name] = solved
        for param in self.params:
            value, param_errors = param.solve(request)
            if param_errors:
                errors.extend(param_errors)
                failed = True
            else:
                values[param.name] = value
        if self.body is not None:
            value, body_errors = _validate(self.body, body, ("body",))
            if body_errors:
                errors.extend(body_errors)
                failed = True
            else:
                values[self.body.name] = value
        if self.request_name is not None:
            values[self.request_name] = request
        return None if failed else values

    async def resolve(self, request: Request, arguments: dict[str, Any]) -> Any:
        """The dependency's value: its result or, for one that yields, what it yields
        (it finishes with the request's or the endpoint's exit stack, as in FastAPI)."""
        if self.exit_stack is None:
            return await self.call(**arguments)
        return await _solve_generator(
            dependant=self.dependant,
            stack=request.scope[self.exit_stack],
            sub_values=arguments,
            request=request,
        )


def _is_async_call(call: Any) -> bool:
    if inspect.isclass(call):
        return False
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _json_body(dependant: Dependant) -> ModelField | None:
    """The one JSON body parameter of an endpoint, if that is what it declares."""
    fields = dependant.body_params
    if len(fields) != 1 or type(fields[0].field_info) is not Body:
        return None
    return fields[0]


def plan(dependant: Dependant, seen: set[Any] | None = None) -> _Plan | None:
    """The plan of ``dependant``, or None when it declares something not planned here.
    Only the endpoint itself (``seen`` is None) may take a body: one JSON model."""
    body = _json_body(dependant) if seen is None else None
    seen = set() if seen is None else seen
    if (
        not _is_async_call(dependant.call)
        or (dependant.body_params and body is None)
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
        if sub.call in seen or inspect.isasyncgenfunction(dependant.call):
            return None  # shared results, dependencies of a yield: FastAPI's rules
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
    exit_stack = None
    if inspect.isasyncgenfunction(dependant.call):
        function = dependant.scope == "function"
        exit_stack = "fastapi_function_astack" if function else "fastapi_inner_astack"
    request_name = dependant.request_param_name
    return _Plan(dependant, tuple(dependencies), tuple(params), request_name, body, exit_stack)


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

        async def endpoint(request: Request, body: Any = _UNDEFINED) -> Any:
            errors: list[Any] = []
            values = await planned.solve(request, errors, body)
            if values is None:
                raise RequestValidationError(errors)
            return await planned.call(**values)

        # What FastAPI resolves for it: the request and, for an endpoint with a body,
        # the body as FastAPI read it (parsed if JSON; not validated: the plan checks
        # it after the dependencies, where FastAPI would).
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter("request", keyword, annotation=Request)]
        if planned.body is not None:
            parameters.append(
                inspect.Parameter(
                    "body", keyword, default=_UNDEFINED, annotation=Annotated[Any, Body()]
                )
            )
        endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        # FastAPI's handler, around an endpoint that takes the request (and the body):
        # it still reads the body and does the response handling (status code,
        # response model, response class).
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
