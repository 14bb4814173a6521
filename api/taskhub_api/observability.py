"""JSON logs carrying the request id (and, with tracing on, the trace and span ids),
Prometheus HTTP metrics, and the metrics server of ``taskhub api`` (a port of its own,
default 9807, which the public Service does not expose)."""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskhub_api import logcontext
from taskhub_api.logcontext import request_id_var

HTTP_REQUESTS = Counter(
    "taskhub_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "taskhub_http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Generated ids: 32 hex digits, a random prefix per process and a counter (unique
# without a system call per request, which uuid4() costs). A forked child draws its own.
_ID_PREFIX = ""
_ID_COUNTER = itertools.count()


def _reseed_request_ids() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


_reseed_request_ids()
os.register_at_fork(after_in_child=_reseed_request_ids)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_ids = logcontext.span_ids
        if span_ids is not None and (ids := span_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JSONFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # We log each request ourselves, with its id.
    logging.getLogger("uvicorn.access").disabled = True


access_log = logging.getLogger("taskhub.access")


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def _route_template(scope: Scope) -> str:
    """The matched route as a template ("/api/v1/tasks/{task_id}"), so metrics keep a
    bounded label set; "unmatched" for 404s of unknown paths."""
    template: str | None = getattr(scope.get("route"), "path_format", None)
    if template is None:
        return "unmatched"
    # The route's own template lacks the prefixes of the routers that include it:
    # those are the path's leading segments (prefixes have no parameters here).
    path: str = scope["path"]
    return path.rsplit("/", template.count("/"))[0] + template


class _HTTPMetrics:
    """The metric children per label set, looked up once (``labels()`` validates and
    locks on every call)."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                HTTP_REQUESTS.labels(method, route, str(status)),
                HTTP_DURATION.labels(method, route),
            )
        children[0].inc()
        children[1].observe(elapsed)


_http_metrics = _HTTPMetrics()


class RequestContextMiddleware:
    """Request id (from ``X-Request-ID`` when well-formed, else new), one access-log
    line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = incoming if _REQUEST_ID.match(incoming) else _new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            _http_metrics.observe(method, route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "route": route,
                    },
                )
            request_id_var.reset(token)


class ProcessGroupCollector(Collector):
    """The metrics of every uvicorn worker process (``taskhub api --workers N``), from
    the files they write to ``PROMETHEUS_MULTIPROC_DIR``, summed as prometheus_client
    does. Gauges of workers that died are dropped first: uvicorn replaces a dead worker
    with a new process, so its last ``taskhub_db_up`` would otherwise be reported for
    ever. Its counters and histograms stay in the sums, which must not go down."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._files = multiprocess.MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        # One scrape at a time: another must not read a file this one removes.
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            for name in glob.glob(os.path.join(self._path, "gauge_*_*.db")):
                mode, pid = os.path.basename(name).removesuffix(".db").split("_")[1:]
                # Per-process gauges only: a "sum" or "max" gauge would lose its value.
                if (mode == "all" or mode.startswith("live")) and not _alive(int(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(name)
            metrics: list[Metric] = list(self._files.collect())  # type: ignore[no-untyped-call]
        return metrics


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now: not one of ours
        return False
    return True


def metrics_registry() -> CollectorRegistry:
    """What the metrics port serves: this process's registry, or with
    ``PROMETHEUS_MULTIPROC_DIR`` set (several workers) the sum over all of them."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(ProcessGroupCollector(path))
    return registry


def serve_metrics(host: str, port: int) -> WSGIServer:
    """Serves ``/metrics`` on ``host:port`` from a thread of this process; the server,
    for ``shutdown()``."""
    server, _ = start_http_server(port, host, registry=metrics_registry())
    logging.getLogger("taskhub").info("API metrics on %s:%s/metrics", host, port)
    return server
