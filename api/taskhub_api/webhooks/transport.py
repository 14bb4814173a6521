"""An httpx transport that connects only to a vetted :class:`~.urlguard.Target`.

httpx resolves the URL's host itself when it connects, which would reopen the gap the
guard closed (a name may answer a public address to the check and an internal one to
the connection). This transport hands httpcore a network backend whose ``connect_tcp``
ignores DNS and dials the addresses the guard vetted, in order. Everything else still
comes from the URL: the Host header, and for https the TLS server name (SNI) and the
certificate check, against the host name.

Public APIs only: ``httpx.AsyncBaseTransport``, ``httpcore.AsyncConnectionPool`` with
its ``network_backend`` argument, ``httpcore.AsyncNetworkBackend`` (httpcore 1.x).
The response body is read up to ``max_body`` bytes (deliveries only need the status),
so a receiver cannot make a worker buffer an endless answer.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache

import httpcore
import httpx

from taskhub_api.webhooks.urlguard import Target

MAX_BODY = 64 * 1024
_KEPT = ("http_version", "reason_phrase")
_FRAMING = (b"content-encoding", b"content-length", b"transfer-encoding")
# Most specific first: the first isinstance match wins.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's default context (certifi's CAs, certificate and host name checks), built
    once per process: building one loads the CA bundle, 10-25 ms of CPU that every
    delivery paid before (docs/benchmarks.md, "The whole stack"). A context holds no
    per-connection state, so every delivery can share it."""
    return httpx.create_ssl_context()


def _bare(host: str) -> str:
    return host.strip("[]").lower()


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the target's vetted addresses whatever host it is asked for."""

    def __init__(self, target: Target, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.target = target
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if _bare(host) != _bare(self.target.host) or port != self.target.port:
            raise httpcore.ConnectError(f"{host}:{port} is not the vetted webhook target")
        failure: Exception = httpcore.ConnectError("no vetted address")
        for address in self.target.addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__, request=request) from exc
        raise


class PinnedTransport(httpx.AsyncBaseTransport):
    """One delivery's transport: HTTP/1.1 to the vetted addresses of ``target``."""

    def __init__(
        self,
        target: Target,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.target = target
        self.max_body = max_body
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or default_ssl_context(),
            max_connections=1,
            http1=True,
            http2=False,
            retries=0,
            network_backend=PinnedBackend(target, backend),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, _bare(url.host), url.port or self.target.port) != (
            self.target.scheme,
            _bare(self.target.host),
            self.target.port,
        ):
            raise httpx.ConnectError("not the vetted webhook target", request=request)
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("an async request body is needed")
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped(request):
            response = await self._pool.handle_async_request(core)
            try:
                body = bytearray()
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) >= self.max_body:
                        break
            finally:
                await response.aclose()
        # The body is raw (and perhaps cut short): no framing or encoding headers.
        headers = [(k, v) for k, v in response.headers if k.lower() not in _FRAMING]
        return httpx.Response(
            status_code=response.status,
            headers=headers,
            content=bytes(body[: self.max_body]),
            extensions={
                k: v
                for k, v in response.extensions.items()
                if k in ("http_version", "reason_phrase")
            },
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
