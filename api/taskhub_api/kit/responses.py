from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from taskhub_api.kit.jsonenc import dumps


class JSONBytes(Response):
    """A response whose body was serialised already, or is serialised here (orjson)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)
