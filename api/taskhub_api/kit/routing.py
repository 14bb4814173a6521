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
twice, ``Response``, ``BackgroundTasks`` or security-scope parameters, a dependency
with ``max_concurrency``) keeps FastAPI's own handler; so does a request while the app
overrides (``app.dependency_overrides``) a dependency of its route. FastAPI's helpers
that the plan uses are private: they are reached through ``kit/internals.py`` (fast path
``planned_routes``; off, every route keeps FastAPI's handler). ``taskhub routes`` lists
what is planned. ``tests/api/test_planned_routes.py`` sends the same requests through
both and requires the same answers.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, request_response

from taskhub_api.kit import internals
from taskhub_api.kit.internals import Dependant, ModelField
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
        sequence = source != "path" and internals.is_sequence_annotation(
            field.field_info.annotation
        )
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
            return None, [internals.missing_field_error(loc)]
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
    # Every dependency called, this one's and its sub-dependencies'.
    calls: frozenset[Any]

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
        return await internals.solve_generator()(
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
    fields: list[ModelField] = dependant.body_params
    if len(fields) != 1 or not internals.is_json_body(fields[0].field_info):
        return None
    return fields[0]


def plan(dependant: Dependant) -> _Plan | None:
    """The plan of an endpoint's ``dependant``, or None when it declares something not
    planned here (``PlannedRoute.not_planned`` says what)."""
    planned = _plan(dependant, None)
    return planned if isinstance(planned, _Plan) else None


def _plan(dependant: Dependant, seen: set[Any] | None) -> _Plan | str:
    """The plan of ``dependant``, or why it is not planned. Only the endpoint itself
    (``seen`` is None) may take a body: one JSON model."""
    body = _json_body(dependant) if seen is None else None
    seen = set() if seen is None else seen
    unplanned = (
        (not _is_async_call(dependant.call), "a sync endpoint or dependency"),
        (bool(dependant.body_params) and body is None, "a body other than one JSON model"),
        (bool(dependant.cookie_params), "a cookie parameter"),
        (
            bool(dependant.http_connection_param_name or dependant.websocket_param_name),
            "an HTTPConnection or WebSocket parameter",
        ),
        (
            bool(dependant.response_param_name or dependant.background_tasks_param_name),
            "a Response or BackgroundTasks parameter",
        ),
        (
            bool(
                dependant.security_scopes_param_name
                or dependant.own_oauth_scopes
                or dependant.parent_oauth_scopes
            ),
            "security scopes",
        ),
        (dependant.concurrency is not None, "a dependency with max_concurrency"),
    )
    for declared, reason in unplanned:
        if declared:
            return reason
    dependencies = []
    calls: set[Any] = set()
    for sub in dependant.dependencies:
        if sub.call in seen:
            return "a dependency used twice"
        if inspect.isasyncgenfunction(dependant.call):
            return "a dependency of a dependency that yields"
        seen.add(sub.call)
        sub_plan = _plan(sub, seen)
        if isinstance(sub_plan, str):
            return sub_plan
        dependencies.append((sub.name, sub_plan))
        calls |= sub_plan.calls
    params: list[_Field | _QueryModel] = []
    declared_params = (
        ("path", dependant.path_params),
        ("query", dependant.query_params),
        ("header", dependant.header_params),
    )
    for source, fields in declared_params:
        for field in fields:
            param = _param(field, source)
            if param is None:
                return f"{source} parameter {field.name!r} is not planned"
            params.append(param)
    exit_stack = None
    if inspect.isasyncgenfunction(dependant.call):
        function = dependant.scope == "function"
        exit_stack = internals.FUNCTION_EXIT_STACK if function else internals.REQUEST_EXIT_STACK
    request_name = dependant.request_param_name
    calls.add(dependant.call)
    return _Plan(
        dependant,
        tuple(dependencies),
        tuple(params),
        request_name,
        body,
        exit_stack,
        frozenset(calls),
    )


def _param(field: ModelField, source: str) -> _Field | _QueryModel | None:
    info = field.field_info
    if internals.param_source(info) != source:
        return None
    annotation = info.annotation
    if internals.is_model(annotation):
        config = annotation.model_config
        if source != "query" or config.get("validate_by_name") or config.get("populate_by_name"):
            return None
        fields = [_Field.of(f, "query") for f in internals.model_fields(annotation)]
        if any(f is None for f in fields):
            return None
        planned = tuple(f for f in fields if f is not None)
        return _QueryModel(field, planned, frozenset(f.alias for f in planned))
    if any(internals.is_model(arg) for arg in getattr(annotation, "__args__", ())):
        return None  # an optional model: FastAPI's own rules apply
    return _Field.of(field, source)


class PlannedRoute(APIRoute):
    """An ``APIRoute`` that solves its parameters by a plan made at start-up.
    ``not_planned``: why it keeps FastAPI's handler (None: it is planned)."""

    not_planned: str | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        provider = self.dependency_overrides_provider
        planned: _Plan | str
        if provider is None:
            planned = "not on an app (add_routers plans the app's routes)"
        elif not internals.enabled("planned_routes"):
            planned = "planned routes are off"
        else:
            planned = _plan(self.dependant, None)
        if isinstance(planned, str):
            self.not_planned = planned
            return super().get_route_handler()
        self.not_planned = None
        handler = self._planned_handler(planned)
        # FastAPI's handler, for requests while the app overrides one of the
        # dependencies the plan would call.
        fastapi_handler = super().get_route_handler()
        calls = planned.calls
        app: Any = provider

        async def route_handler(request: Request) -> Response:
            overrides = app.dependency_overrides
            if overrides and not calls.isdisjoint(overrides):
                return await fastapi_handler(request)
            return await handler(request)

        return route_handler

    def _planned_handler(
        self, planned: _Plan
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
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
        self.dependant = internals.dependant(self.path_format, endpoint)
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
    """The routers' routes, in order, as routes of the app itself, each a copy whose
    handler is built for this app (so it honours ``app.dependency_overrides``).

    Not ``include_router``: it routes through a nested router per include and builds
    each route's handler again in that context, which FastAPI's default handler and
    not the plan would then serve."""
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                route = copy.copy(route)
                route.dependency_overrides_provider = app
                route.app = request_response(route.get_route_handler())
            app.router.routes.append(route)


def describe(app: FastAPI) -> list[tuple[str, str, str, str | None]]:
    """Each route of ``app``: methods, path, name, and why it is not planned (None:
    planned)."""
    described = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        why = route.not_planned if isinstance(route, PlannedRoute) else "declared on the app itself"
        described.append((",".join(sorted(route.methods or ())), route.path, route.name, why))
    return described
