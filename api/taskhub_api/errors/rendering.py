"""Every error the API answers, as RFC 9457 problem+json, and how the OpenAPI document
declares them."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from taskhub_api.errors import AppError, Problem, ServiceUnavailable

log = logging.getLogger("taskhub")
PROBLEM = "application/problem+json"
# RFC 9110 names where Python's table still has the older ones.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def _title(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _title(status),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    # Starlette's JSON encoder, not the API's (kit): errors stay below every package.
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


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
    errors: list[dict[str, Any]] = []
    for e in exc.errors():
        if e["type"] == "json_invalid":  # loc holds the character position, not a field
            position = e["loc"][-1]
            error = {
                "field": "body",
                "message": f"is not valid JSON (at character {position})",
                "type": e["type"],
            }
        else:
            error = {"field": _field(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
        if error not in errors:
            errors.append(error)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(
        422, detail or "The request is invalid.", errors=errors, instance=request.url.path
    )


def _unparsable_body(cause: BaseException) -> dict[str, str]:
    # What FastAPI's 400 "error parsing the body" came from.
    if isinstance(cause, RecursionError):
        message = "is nested too deeply to parse"
    elif isinstance(cause, UnicodeDecodeError):
        message = f"is not valid UTF-8 (at byte {cause.start})"
    elif isinstance(cause, ValueError):  # a number of more digits than Python converts
        message = f"cannot be parsed: {cause}"
    else:
        message = "cannot be parsed"
    return {"field": "body", "message": message, "type": "body_unparsable"}


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names the methods of the first route on the path only; a path
    # served by several routes (GET and POST /tasks) allows all of theirs.
    methods: set[str] = set()
    for route in request.app.router.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.matches(request.scope)[0] != Match.NONE
        ):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    errors = None
    detail = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI read the body
        error = _unparsable_body(exc.__cause__)
        errors = [error]
        detail = f"body: {error['message']}"
    return problem(
        exc.status_code,
        detail,
        errors=errors,
        headers=headers,
        instance=request.url.path,
    )


async def _database_unavailable(request: Request, exc: ServiceUnavailable) -> Response:
    # Expected when the database is down or the pool is exhausted: fail fast with 503,
    # and have the monitor look now rather than at its next tick.
    cause = exc.__cause__ or exc
    log.warning("database unavailable: %s", type(cause).__name__, exc_info=cause)
    request.app.state.db.monitor.nudge()
    return await _app_error(request, exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's outermost middleware calls this for an exception nothing handled,
    # then raises it again (so the server logs it with its traceback).
    return problem(500, "An unexpected error occurred.", instance=request.url.path)


def install_handlers(app: FastAPI, unavailable: type[ServiceUnavailable]) -> None:
    """Every error as problem+json; ``unavailable`` (the database's) also nudges the
    database monitor."""
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(unavailable, _database_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the error statuses it may answer."""
    return {
        status: {"description": _title(status), "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
        for status in sorted(statuses)
    }


def openapi_with_problems(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (FastAPI's, which it builds once and keeps), with the
    ``Problem`` schema that ``problem_responses`` refer to. Set as ``app.openapi``."""
    document = FastAPI.openapi(app)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas["Problem"] = schema
    return document
