"""``bench/servers.py --check``: what the platform relies on from its HTTP server, tried
on uvicorn (``taskhub api``) and on granian (``serve_granian`` below: the same start-up
as ``serve_api``, granian in uvicorn's place), against the bench database.

Each check prints one row: server, check, ok or not, and what was seen. Lifespan and
logs, the 400 for unparsable requests, the forwarded scheme from a trusted proxy, the
metrics of several workers summed on the metrics port, a killed worker, and SIGTERM
with a request in flight (a small ASGI app that sleeps: the server's behaviour, not
the app's, is under test). The forwarded client address is checked in-process:
uvicorn's ProxyHeadersMiddleware and granian's wrap_asgi_with_proxy_headers given the
same scopes.

    .venv/bin/python bench/servers.py --check --port 8121
    .venv/bin/python bench/serverchecks.py serve-granian --port 8121 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import BIN, DB_URL, RESULTS, ROOT

HERE = Path(__file__).resolve().parent
Row = tuple[str, str, bool, str]
# granian's own log lines (start, workers, errors) through the root logger, which
# configure_logging gives our handler, instead of granian's plain-text handler.
GRANIAN_LOGGING = {"loggers": {"_granian": {"handlers": [], "propagate": True}}}


# -- granian, started the way serve_api starts uvicorn ------------------------------


def proxied_app() -> Any:
    """The app behind granian's X-Forwarded-For/Proto rewriting, trusting only the
    settings' proxies (uvicorn's forwarded_allow_ips in serve_api)."""
    from granian.utils.proxies import wrap_asgi_with_proxy_headers

    from taskhub_api.main import create_app
    from taskhub_api.settings import get_settings

    app = create_app()
    return wrap_asgi_with_proxy_headers(app, get_settings().ratelimit.trusted_proxies)


def serve_granian(host: str, port: int, workers: int, metrics_port: int, respawn: bool) -> None:
    if metrics_port and workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="taskhub-api-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    from taskhub_api.observability import configure_logging, serve_metrics
    from taskhub_api.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if metrics_port:
        serve_metrics(host, metrics_port)
    trusted = settings.ratelimit.trusted_proxies
    Granian(
        "serverchecks:proxied_app" if trusted else "taskhub_api.main:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_access=False,
        log_dictconfig=GRANIAN_LOGGING,
        factory=True,
        respawn_failed_workers=respawn,
    ).serve()


async def slow_app(scope: dict[str, Any], receive: Callable[..., Any], send: Any) -> None:
    """Sleeps ``?s=`` seconds, then answers 200 "done"."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    match = re.search(rb"s=([0-9.]+)", scope["query_string"])
    await asyncio.sleep(float(match.group(1)) if match else 0)
    headers = [(b"content-length", b"4")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"done"})


def serve_slow(server: str, port: int) -> None:
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(slow_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools")
        return
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    Granian(
        "serverchecks:slow_app",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
    ).serve()


# -- processes ---------------------------------------------------------------------


class Proc:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def workers(self) -> list[int]:
        """The worker processes (not multiprocessing's resource tracker)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        pids = [int(pid) for pid in out.stdout.split()]
        return [p for p in pids if b"resource_tracker" not in _cmdline(p) and not _zombie(p)]

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM; seconds until it exited (killed after ``timeout``: inf)."""
        if self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return float("inf")
        return time.monotonic() - started


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(url: str, status: int = 200, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(url)[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer {status} within {timeout:.0f} s")


@contextmanager
def api(
    server: str, port: int, workers: int = 1, metrics_port: int = 0, **env: str
) -> Iterator[Proc]:
    if server == "uvicorn":
        command = [str(BIN / "taskhub"), "api", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", str(workers), "--metrics-port", str(metrics_port)]
    else:
        command = [str(BIN / "python"), str(HERE / "serverchecks.py"), "serve-granian"]
        command += ["--port", str(port), "--workers", str(workers)]
        command += ["--metrics-port", str(metrics_port), "--respawn"]
    settings = {
        "TASKHUB_DB__URL": DB_URL,
        "TASKHUB_DB__POOL_SIZE": "4",
        "TASKHUB_DB__WARM_UP_SECONDS": "1",
        "TASKHUB_LOG_LEVEL": "INFO",
        "TASKHUB_LOG_JSON": "true",
        "TASKHUB_CACHE__ENABLED": "false",
        "TASKHUB_RATELIMIT__ENABLED": "false",
        "TASKHUB_REDIS__KEY_PREFIX": "taskhub-bench:",
    }
    log = RESULTS / f"check-{server}-{port}.log"
    proc = Proc(command, {**os.environ, **settings, **env}, log)
    try:
        wait_for(f"http://127.0.0.1:{port}/health/ready")
        yield proc
    finally:
        proc.stop()


def raw(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


# -- checks ------------------------------------------------------------------------

BAD_REQUESTS = {
    "DEL in a header": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Odd: a\x7fb\r\n\r\n",
    "control char in a header": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Odd: a\x01b\r\n\r\n",
    "broken request line": b"GARBAGE\r\n\r\n",
}


def check_lifespan_logs_400(server: str, port: int) -> list[Row]:
    rows: list[Row] = []
    with api(server, port) as proc:
        rows.append((server, "lifespan startup", True, "/health/ready 200 (pools open)"))
        for name, request in BAD_REQUESTS.items():
            answer = raw(port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            problem = b"application/problem+json" in head.lower() and b'"status":400' in body
            first = head.split(b"\r\n")[0].decode("latin-1")
            rows.append(
                (server, f"400 problem+json: {name}", problem, f"{first}, {len(body)} B body")
            )
        _, headers, _ = get(f"http://127.0.0.1:{port}/health/live")
        rows.append(
            (
                server,
                "no Server header",
                "server" not in {h.lower() for h in headers},
                f"server: {headers.get('server', '-')}",
            )
        )
        seconds = proc.stop()
    lines = proc.log.read_text(errors="replace").splitlines()
    disposed = any("Pool disposed" in line for line in lines)
    shutdown = f"'Pool disposed' logged, exit {seconds:.1f} s"
    rows.append((server, "lifespan shutdown", disposed, shutdown))
    foreign = [line for line in lines if line.strip() and not line.startswith("{")]
    access = sum('"logger":"taskhub.access"' in line for line in lines)
    rows.append(
        (
            server,
            "logs through our logger",
            not foreign and access > 0,
            f"{access} taskhub.access lines; {len(foreign)} lines not ours"
            + (f", e.g. {foreign[0][:80]!r}" if foreign else ""),
        )
    )
    return rows


def check_forwarded_scheme(server: str, port: int) -> list[Row]:
    """A slash-redirect's Location carries the scheme the server put in the scope."""
    rows: list[Row] = []
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    for trusted, expect in (('["127.0.0.1/32"]', "https"), ('["10.0.0.0/8"]', "http")):
        with api(server, port, TASKHUB_RATELIMIT__TRUSTED_PROXIES=trusted):
            status, answer, _ = get(f"http://127.0.0.1:{port}/api/v1/tasks/", headers)
            location = answer.get("location", "")
            rows.append(
                (
                    server,
                    f"X-Forwarded-Proto, trusted {trusted}",
                    status in (307, 308) and location.startswith(expect + "://"),
                    f"{status} location {location}",
                )
            )
    return rows


def check_forwarded_client() -> list[Row]:
    """Both servers' proxy-header middlewares on the same scopes, in-process."""
    from granian.utils.proxies import wrap_asgi_with_proxy_headers
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["client"], seen["scheme"] = scope["client"][0], scope["scheme"]

    def headers(**h: str) -> list[tuple[bytes, bytes]]:
        return [(k.replace("_", "-").encode(), v.encode()) for k, v in h.items()]

    both = headers(x_forwarded_for="203.0.113.7", x_forwarded_proto="https")
    cases = [
        ("trusted peer", "10.0.0.2", both),
        ("untrusted peer", "198.51.100.9", both),
        ("chain through 2 trusted", "10.0.0.2", headers(x_forwarded_for="203.0.113.7, 10.0.0.5")),
        ("proto without XFF", "10.0.0.2", headers(x_forwarded_proto="https")),
    ]
    wrapped = {
        "uvicorn": ProxyHeadersMiddleware(app, trusted_hosts=["10.0.0.0/8"]),  # type: ignore[arg-type]
        "granian": wrap_asgi_with_proxy_headers(app, ["10.0.0.0/8"]),
    }
    results: dict[str, list[str]] = {}
    for server, middleware in wrapped.items():
        for _, peer, hdrs in cases:
            scope = {"type": "http", "client": (peer, 1234), "scheme": "http", "headers": hdrs}
            asyncio.run(middleware(scope, None, None))
            results.setdefault(server, []).append(f"{seen['client']} {seen['scheme']}")
    rows: list[Row] = []
    for i, (name, _, _) in enumerate(cases):
        u, g = results["uvicorn"][i], results["granian"][i]
        rows.append(("granian", f"X-Forwarded-For: {name}", u == g, f"uvicorn {u}; granian {g}"))
    return rows


def check_metrics(server: str, port: int) -> list[Row]:
    metrics = f"http://127.0.0.1:{port + 1}/metrics"
    with api(server, port, workers=2, metrics_port=port + 1) as proc:
        pids = proc.workers()
        before = _live_count(get(metrics)[2])
        for _ in range(40):
            get(f"http://127.0.0.1:{port}/health/live")
        after = _live_count(get(metrics)[2])
    return [
        (
            server,
            "metrics port, 2 workers: sum",
            after - before == 40,
            f"+{after - before:g} of 40 requests counted; workers {pids}",
        )
    ]


def _live_count(text: bytes) -> float:
    pattern = rb'^taskhub_http_requests_total\{[^}]*route="/health/live"[^}]*\} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))


def check_killed_worker(server: str, port: int) -> list[Row]:
    """One of 2 workers killed: replaced (within 40 s), the server serving meanwhile."""
    with api(server, port, workers=2) as proc:
        before = proc.workers()
        os.kill(before[0], signal.SIGKILL)
        killed = time.monotonic()
        served = sum(_live(port) for _ in range(20))
        after = proc.workers()
        while (before[0] in after or len(after) < 2) and time.monotonic() - killed < 40:
            time.sleep(0.2)
            after = proc.workers()
        seconds = time.monotonic() - killed
        alive = proc.process.poll() is None
    ok = alive and before[0] not in after and len(after) == 2
    return [
        (server, "a worker killed (-9)", ok,
         f"workers {before} -> {after} after {seconds:.1f} s, server alive {alive}, "
         f"{served}/20 served meanwhile")
    ]  # fmt: skip


def _live(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/health/live")[0] == 200
    except OSError:  # accepted by the killed worker, or refused
        return False


def check_sigterm(server: str, port: int) -> list[Row]:
    """A request in flight (3 s) when SIGTERM comes: it completes; a new connection
    is refused; the server exits well within the pod's grace (30 s less 5 s preStop)."""
    command = [str(BIN / "python"), str(HERE / "serverchecks.py"), "serve-slow", server]
    command += ["--port", str(port)]
    proc = Proc(command, dict(os.environ), RESULTS / f"check-slow-{server}.log")
    try:
        wait_for(f"http://127.0.0.1:{port}/?s=0")
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle.sendall(b"GET /?s=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = b""
        while not answered.endswith(b"done"):  # answered; the connection stays open, idle
            answered += idle.recv(65536)
        result: dict[str, Any] = {}

        def in_flight() -> None:
            try:
                request = b"GET /?s=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                answer = raw(port, request, 15)
                result["answer"] = answer.split(b"\r\n")[0].decode() + " " + answer[-4:].decode()
            except OSError as exc:
                result["answer"] = repr(exc)

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        os.killpg(proc.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        try:
            fresh = raw(port, b"GET /?s=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
            refused = "new connection answered: " + fresh.split(b"\r\n")[0].decode("latin-1")
        except OSError as exc:
            refused = f"new connection: {type(exc).__name__}"
        try:
            idle_gone = idle.recv(1) == b""
        except OSError:
            idle_gone = True
        thread.join()
        proc.process.wait(timeout=30)
        seconds = time.monotonic() - started
    finally:
        proc.stop()
    done = "200" in result.get("answer", "") and result["answer"].endswith("done")
    ok = done and "answered" not in refused and seconds < 25
    return [
        (
            server,
            "SIGTERM, a request in flight",
            ok,
            f"in flight: {result.get('answer')}; {refused}; idle keep-alive closed "
            f"{idle_gone}; exited after {seconds:.1f} s",
        )
    ]


def main(port: int) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for server in ("uvicorn", "granian"):
        rows += check_lifespan_logs_400(server, port)
        rows += check_forwarded_scheme(server, port)
        rows += check_metrics(server, port)
        rows += check_killed_worker(server, port)
        rows += check_sigterm(server, port)
    rows += check_forwarded_client()
    lines = ["| server | check | ok | seen |", "|---|---|---|---|"]
    lines += [f"| {s} | {c} | {'yes' if ok else '**no**'} | {e} |" for s, c, ok, e in rows]
    table = "\n".join(lines) + "\n"
    (RESULTS / "serverchecks.md").write_text(table)
    (RESULTS / "serverchecks.json").write_text(json.dumps(rows, indent=2))
    print(table)
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve-granian")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8121)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--metrics-port", type=int, default=0)
    serve.add_argument("--respawn", action="store_true", help="respawn failed workers")
    slow = commands.add_parser("serve-slow")
    slow.add_argument("server", choices=("uvicorn", "granian"))
    slow.add_argument("--port", type=int, default=8121)
    args = parser.parse_args()
    if args.command == "serve-granian":
        serve_granian(args.host, args.port, args.workers, args.metrics_port, args.respawn)
    else:
        serve_slow(args.server, args.port)


if __name__ == "__main__":
    cli()
