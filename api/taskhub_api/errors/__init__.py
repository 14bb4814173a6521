"""One error family, rendered as RFC 9457 problem+json by one handler
(``errors.rendering``, which alone of this package knows the web framework: services
and jobs raise these errors without importing it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class AppError(Exception):
    status_code = 400
    title = "Bad Request"
    type = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(AppError):
    status_code = 400
    title = "Bad Request"


class Unauthorized(AppError):
    status_code = 401
    title = "Unauthorized"

    def __init__(self, detail: str = "Invalid or missing credentials.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    title = "Forbidden"


class NotFound(AppError):
    status_code = 404
    title = "Not Found"


class Conflict(AppError):
    status_code = 409
    title = "Conflict"


class PreconditionFailed(AppError):
    status_code = 412
    title = "Precondition Failed"


class PayloadTooLarge(AppError):
    status_code = 413
    title = "Content Too Large"


class UnprocessableContent(AppError):
    status_code = 422
    title = "Unprocessable Content"


class ServiceUnavailable(AppError):
    status_code = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


class TooManyRequests(AppError):
    status_code = 429
    title = "Too Many Requests"


class FieldError(BaseModel):
    """What is wrong with one field of the request."""

    field: str  # "labels[3]", "limit", "If-Match", or "body" for the body as a whole
    message: str
    type: str | None = None


class Problem(BaseModel):
    """An error response (RFC 9457 ``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
