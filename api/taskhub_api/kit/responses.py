from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from taskhub_api.kit.jsonenc import dumps


class JSONBytes(JSONResponse):
    """A response whose body was serialised already, or is serialised here (orjson).

    A ``JSONResponse``, so that FastAPI's OpenAPI document describes the route's body by
    its ``response_model`` whatever encoded the bytes."""

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)
