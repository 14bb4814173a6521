"""Headers decided by dependencies (rate limits, consistency tokens) reach the
response here, whatever response class the endpoint returns."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STATE_KEY = "response_headers"


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    pending: dict[str, str] = request.scope.setdefault("state", {}).setdefault(_STATE_KEY, {})
    pending.update(headers)


class ResponseHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                pending: dict[str, str] | None = scope.get("state", {}).get(_STATE_KEY)
                if pending:
                    raw = list(message.get("headers", []))
                    present = {name.lower() for name, _ in raw}
                    for name, value in pending.items():
                        if name.lower().encode() not in present:
                            raw.append((name.lower().encode(), value.encode("latin-1")))
                    message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)
