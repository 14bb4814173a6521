"""The HTTP protocol `taskhub api` serves with: uvicorn's own (httptools), answering a
request it cannot parse (a control character in a header, a broken request line) with
problem+json like every other error, instead of uvicorn's text/plain.

uvicorn rejects such requests before the application sees them, so no exception
handler can; ``uvicorn.run(http=...)`` takes a protocol class, and this one changes only
its ``send_400_response``."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from taskhub_api.kit.jsonenc import dumps

_BODY = dumps(
    {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "The request is not valid HTTP/1.1 (its request line or a header).",
        "errors": [
            {
                "field": "request",
                "message": "is not valid HTTP/1.1: a header name or value holds a character"
                " HTTP does not allow, or the request line is malformed",
                "type": "http_invalid",
            }
        ],
    }
)


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/problem+json\r\n",
                b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _BODY,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
