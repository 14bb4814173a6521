"""An open-loop load generator: requests on a fixed schedule, latency from the intended
send time.

A closed loop (wrk's 64 connections) sends the next request only when an answer came
back, so a slow server slows the load down and its queueing delay never shows in the
latency (coordinated omission). Here request ``i`` is due at ``start + i / rate``
(constant rate) whatever the server does, and its latency runs from that due time to
the end of its response: time spent waiting for the loop, for a free connection or in
the server's queue all counts. Connections are HTTP/1.1 keep-alive on raw asyncio
streams; a request takes the most recently used idle one or opens a new one (up to
``max_connections``; past that it waits, counted from its due time). Requests are
prepared as bytes once and rotated, as the wrk scripts do, so the generator spends
little per request: it reports its own CPU per request, to be checked against the
server's.

    .venv/bin/python bench/openloop.py http://127.0.0.1:8102 bench/results/fixtures.json \\
        --scenario get --rate 500 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

TIMEOUT_S = 5.0
# A request sent more than this after its due time was "not sent on time".
LATE_S = 0.010
MAX_CONNECTIONS = 512
# An idle connection is reused only this soon after its last response: uvicorn closes
# keep-alive connections after 5 s idle, and a request written on a connection the
# server is closing would fail as a client's artefact, not the server's.
KEEP_ALIVE_S = 2.0


@dataclass
class Result:
    offered_rps: float
    achieved_rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    late: int  # sent more than LATE_S after its due time
    max_send_lag_ms: float
    connections: int
    generator_cpu_ms_per_request: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class _State:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(
        default_factory=lambda: {"status": 0, "timeout": 0, "connection": 0}
    )
    late: int = 0
    max_lag: float = 0.0
    opened: int = 0
    last_done: float = 0.0


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def prepare(host: str, port: int, method: str, fixtures: list[dict[str, str]]) -> list[bytes]:
    """Each fixture (path, token, optional JSON body) as the bytes of one request."""
    requests = []
    for f in fixtures:
        body = f.get("body", "").encode()
        head = [
            f"{method} {f['path']} HTTP/1.1",
            f"Host: {host}:{port}",
            f"Authorization: Bearer {f['token']}",
        ]
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return requests


async def _exchange(conn: Connection, request: bytes) -> int:
    """Sends one request and reads its whole response; returns the status. Raises
    ConnectionError if the server closed the connection or the answer has no length."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ConnectionError("response without Content-Length")
    await reader.readexactly(length)
    return status


async def run(
    url: str,
    method: str,
    fixtures: list[dict[str, str]],
    rate: float,
    duration: float,
    max_connections: int = MAX_CONNECTIONS,
) -> Result:
    """Sends ``rate * duration`` requests at a constant rate and waits for them all
    (each at most TIMEOUT_S)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = prepare(host, port, method, fixtures)
    idle: list[tuple[Connection, float]] = []  # and when its last response ended
    slots = asyncio.Semaphore(max_connections)
    state = _State()
    # Not loop.time(): uvloop's clock has millisecond resolution.
    now = time.perf_counter

    async def one(request: bytes, due: float) -> None:
        async with slots:
            conn = None
            while idle and conn is None:
                candidate, since = idle.pop()
                if now() - since < KEEP_ALIVE_S:
                    conn = candidate
                else:
                    _close(candidate)
            try:
                async with asyncio.timeout(max(due + TIMEOUT_S - now(), 0)):
                    if conn is None:
                        conn = await asyncio.open_connection(host, port)
                        state.opened += 1
                    lag = now() - due
                    state.max_lag = max(state.max_lag, lag)
                    state.late += lag > LATE_S
                    status = await _exchange(conn, request)
            except TimeoutError:
                state.errors["timeout"] += 1
                _close(conn)
                return
            except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                state.errors["connection"] += 1
                _close(conn)
                return
            done = now()
            state.last_done = max(state.last_done, done)
            state.latencies.append(done - due)
            state.errors["status"] += status >= 400
            idle.append((conn, done))

    total = round(rate * duration)
    cpu = time.process_time()
    start = now() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i % len(requests)], due)))
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    for conn, _ in idle:
        _close(conn)

    latencies = sorted(state.latencies)
    answered = len(latencies)

    def pct(q: float) -> float:
        if not latencies:
            return 0.0
        return round(1000 * latencies[min(int(q * answered), answered - 1)], 2)

    elapsed = max(state.last_done - start, duration)
    return Result(
        offered_rps=rate,
        achieved_rps=round(answered / elapsed, 1),
        requests=total,
        p50_ms=round(1000 * statistics.median(latencies), 2) if latencies else 0.0,
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        max_ms=round(1000 * latencies[-1], 2) if latencies else 0.0,
        errors=state.errors,
        late=state.late,
        max_send_lag_ms=round(1000 * state.max_lag, 2),
        connections=state.opened,
        generator_cpu_ms_per_request=round(1000 * cpu / max(total, 1), 3),
    )


def _close(conn: Connection | None) -> None:
    if conn is not None:
        conn[1].close()


def measure(
    url: str, method: str, fixtures: list[dict[str, str]], rate: float, duration: float
) -> Result:
    """``run`` on a uvloop event loop of its own."""
    return uvloop.run(run(url, method, fixtures, rate, duration))


METHODS = {"list": "GET", "get": "GET", "create": "POST"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("fixtures", type=Path, help="JSON written by bench/run.py")
    parser.add_argument("--scenario", choices=METHODS, default="get")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds")
    args = parser.parse_args()
    fixtures = json.loads(args.fixtures.read_text())[args.scenario]
    result = measure(args.url, METHODS[args.scenario], fixtures, args.rate, args.duration)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
