"""``make bench``: the API and the raw-asyncpg reference, side by side in one run.

Seeds ``taskhub_bench`` if needed, starts the API (``taskhub api``) and the reference
(``bench/reference_app.py``) on two ports with the same settings, pool and signing key,
checks that both answer the same, then for each scenario warms both up and runs wrk
against them in turn (A,B then B,A each round, so drift and other load on the machine
fall on both alike). The API runs in two modes by default, one after the other, each
measured against the same reference server in rounds of its own: ``fast`` (the default
settings) and ``off`` (every fast path of kit/internals.py off:
``TASKHUB_FAST_PATHS__ENABLED=false``); a third, ``cached``, on request (below). One
API server at a time (the cached mode's serves on ``--api-port`` too): the machine's
PostgreSQL serves other work too, and each server holds a full pool. Prints a markdown
table with the ratios and writes it to ``bench/results/latest.md`` (and the raw
numbers to ``latest.json``).

    .venv/bin/python bench/run.py                       # defaults: 15 s runs, 2 rounds
    .venv/bin/python bench/run.py --duration 30 --rounds 3 --scenarios list,get
    .venv/bin/python bench/run.py --modes fast          # the default mode only
    .venv/bin/python bench/run.py --open-loop           # latency at 25/50/75 % of capacity
    .venv/bin/python bench/run.py --modes fast,cached   # also the Redis cache on

``--modes cached`` (not in the default) measures the read cache: the API with the Redis
cache on (``TASKHUB_CACHE__ENABLED=true``) and the principal cache at its default
(0.5 s), against the same uncached reference; its target is 1.2x the reference's req/s
for list and get. Every mode's API talks to a redis-server that the run starts for
itself on ``--redis-port`` (nothing saved to disk; the system Redis is not touched),
flushed before each scenario of the cached mode, so each starts cold and its warm-up
fills the cache. The cached API serves its metrics on ``--metrics-port``: each round
reports the response cache's hit ratio (``taskhub_cache_requests_total``), the share of
requests that needed no principal read (``taskhub_db_reads_total`` less the cache's
misses) and Redis's CPU per request.

    .venv/bin/python bench/run.py --modes cached --scenarios list,get

``--open-loop`` measures latency as users meet it instead (bench/openloop.py): per
scenario, the reference's capacity (its closed-loop req/s, one wrk run), then requests
at a fixed rate of 25, 50 and 75 % of that capacity against the API (default mode) and
the reference in turn (A,B then B,A), latency counted from each request's due time.
Writes ``bench/results/openloop.md`` and ``openloop.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis
from prometheus_client.parser import text_string_to_metric_families

import fixtures
import openloop
import seed
import taskhub_api
from common import (
    BIN,
    CREATED_PREFIX,
    DB_DSN,
    RESULTS,
    ROOT,
    TASKS,
    USERS,
    WRK_SCRIPTS,
    api_environment,
)
from taskhub_api.settings import AuthSettings, Settings

SCENARIOS = {"list": 0.8, "get": 0.8, "create": 0.6}  # target ratio API / reference
# With the response cache on, repeated reads must beat the uncached reference.
CACHED_TARGETS = {"list": 1.2, "get": 1.2}
P99_TARGET_MS = 100.0
REF = "reference"
# The API's modes: the server's name and its settings on top of the run's.
CACHED = "cached"
MODES = {
    "fast": ("api", {}),
    "off": ("api-off", {"TASKHUB_FAST_PATHS__ENABLED": "false"}),
    CACHED: (
        "api-cached",
        {
            "TASKHUB_CACHE__ENABLED": "true",
            "TASKHUB_AUTH__PRINCIPAL_CACHE_SECONDS": str(
                AuthSettings.model_fields["principal_cache_seconds"].default
            ),
        },
    ),
}
DEFAULT_MODES = ("fast", "off")
TICKS = os.sysconf("SC_CLK_TCK")
# Open loop: the API's p99 target at 50 % of the reference's capacity, and the most its
# p99 may be over the reference's at each rate.
OPEN_LOOP_P99_MS = {"list": 50.0, "get": 50.0, "create": 100.0}
OPEN_LOOP_TARGET_LOAD = 0.5
OPEN_LOOP_P99_RATIO = 1.5


@dataclass
class Run:
    scenario: str
    mode: str  # the API's mode these rounds measured (the reference's too)
    server: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_ms_per_request: float
    db_sessions: int
    load_average: float
    # Servers with metrics (the cached mode): the deltas of CacheCounts over the run.
    cache: dict[str, float] | None = None


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the run's
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    metrics_port: int = 0  # its Prometheus metrics (0: none)
    # Processes that serve this server's requests too (the cached API's Redis): their
    # CPU is reported with its own.
    helpers: list[Server] = field(default_factory=list)
    # True once it serves; None: an HTTP server, up once it answers a list with 401.
    ready: Callable[[Server], bool] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    print("bench: installing wrk (Debian package)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, timeout=300)
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("bench: wrk is not available")
    return wrk


async def delete_created_tasks() -> int:
    """Removes what create runs added (tasks, and the events and outbox rows of their
    creation: the seed writes none), so every run sees the seeded data set."""
    conn = await asyncpg.connect(DB_DSN)
    try:
        status = await conn.execute("DELETE FROM task WHERE title LIKE $1", CREATED_PREFIX + "%")
        deleted = int(status.split()[-1])
        if await conn.fetchval("SELECT to_regclass('event') IS NOT NULL"):
            await conn.execute("TRUNCATE event CASCADE")
        if deleted:
            await conn.execute("VACUUM (ANALYZE) task")
        return deleted
    finally:
        await conn.close()


def _request(url: str, token: str | None = None, body: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _serves_api(server: Server) -> bool:
    try:
        return _request(server.url + "/api/v1/tasks")[0] == 401
    except OSError:
        return False


def wait_ready(server: Server, timeout: float = 90.0) -> None:
    """Up once ``server.ready`` says so; by default once an unauthenticated list is
    answered with 401 (the app is serving)."""
    ready = server.ready or _serves_api
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            sys.exit(f"bench: {server.name} exited; see {server.log}")
        if ready(server):
            return
        time.sleep(0.5)
    sys.exit(f"bench: {server.name} did not start within {timeout:.0f} s; see {server.log}")


@contextmanager
def running(servers: list[Server], env: dict[str, str]) -> Iterator[None]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        for server in servers:
            server.log = RESULTS / f"{server.name}.log"
            with server.log.open("wb") as log:
                server.process = subprocess.Popen(
                    server.command,
                    cwd=ROOT,
                    env={**env, **server.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for server in servers:
            wait_ready(server)
        yield
    finally:
        for server in servers:
            stop(server)


def stop(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # its own session: only what we started
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def redis_server(port: int) -> Server:
    """A redis-server of the run's own: nothing saved to disk, so it starts empty."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench: redis-server is not installed (Debian package redis-server)")
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", str(RESULTS)]
    return Server("redis", port, command, ready=_pings)


def _redis(server: Server) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)


def _pings(server: Server) -> bool:
    """Answers, and is the process we started (not another server on the port)."""
    assert server.process is not None
    try:
        with _redis(server) as client:
            pid = client.info("server")["process_id"]
    except redis.RedisError:
        return False
    if pid != server.process.pid:
        sys.exit(f"bench: another Redis listens on port {server.port}; see {server.log}")
    return True


def flush(server: Server) -> None:
    """Empties the run's Redis: the scenario that follows starts cold."""
    with _redis(server) as client:
        client.flushall()


def check_same_answers(api: Server, ref: Server, data: dict[str, list[dict[str, str]]]) -> None:
    """Both servers give the same status and body (create: the same fields and
    values, except the new id and timestamps). The API answers list and get twice: a
    cached API from its cache the second time."""
    for scenario in ("list", "get"):
        first = data[scenario][0]
        answers = [_request(s.url + first["path"], first["token"]) for s in (api, ref, api)]
        if answers[0] != answers[1] or answers[2] != answers[1] or answers[0][0] != 200:
            sys.exit(f"bench: {scenario} answers differ: {[a[0] for a in answers]}")
    first = data["create"][0]
    answers = [_request(s.url + first["path"], first["token"], first["body"]) for s in (api, ref)]
    bodies = [json.loads(body) for _, body in answers]
    fresh = {"id", "created_at", "updated_at"}
    same = [{k: v for k, v in b.items() if k not in fresh} for b in bodies]
    if answers[0][0] != 201 or answers[1][0] != 201 or same[0] != same[1]:
        sys.exit(f"bench: create answers differ: {answers[0]} vs {answers[1]}")


def run_wrk(
    wrk: str,
    server: Server,
    scenario: str,
    args: argparse.Namespace,
    fixture_file: Path,
    seconds: float,
) -> dict[str, Any]:
    command = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(WRK_SCRIPTS / f"{scenario}.lua"),
        server.url,
        "--",
        str(fixture_file),
    ]
    cpu = server.cpu_seconds()
    helpers = sum(h.cpu_seconds() for h in server.helpers)
    out = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    match = re.search(r"^BENCH_RESULT (.*)$", out.stdout, re.MULTILINE)
    if match is None:
        sys.exit(f"bench: no result from wrk:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["cpu_seconds"] = server.cpu_seconds() - cpu
    result["helper_cpu_seconds"] = sum(h.cpu_seconds() for h in server.helpers) - helpers
    return result


# What a server's metrics count (cache_counts): cache lookups by result, reads through
# a ReadEngine (the principal's row, and each lookup that found no entry) and requests.
COUNTS = ("hit", "miss", "bypass", "db_reads", "requests")


def cache_counts(server: Server) -> dict[str, float]:
    """The API's own counters, from its metrics port."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts = dict.fromkeys(COUNTS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "taskhub_cache_requests_total":
                counts[sample.labels["result"]] += sample.value
            elif sample.name == "taskhub_db_reads_total" and sample.labels["target"] in (
                "primary",
                "replica",  # not fallback and retry: the same read once more
            ):
                counts["db_reads"] += sample.value
            elif sample.name == "taskhub_http_requests_total":
                counts["requests"] += sample.value
    return counts


def cache_ratios(counts: dict[str, float]) -> dict[str, float]:
    """Hit ratio of the response cache, and the share of requests that read no
    principal row (every lookup without a hit reads the database once)."""
    lookups = counts["hit"] + counts["miss"] + counts["bypass"]
    principal_reads = counts["db_reads"] - counts["miss"] - counts["bypass"]
    requests = max(counts["requests"], 1)
    return {
        "hit_ratio": counts["hit"] / lookups if lookups else 0.0,
        "principal_reads": principal_reads,
        "principal_hit_ratio": 1 - principal_reads / requests,
    }


async def _sessions() -> int:
    # Retried: the machine's PostgreSQL also serves other work and may be at its
    # max_connections for a moment.
    for attempt in range(20):
        try:
            conn = await asyncpg.connect(DB_DSN)
            break
        except asyncpg.TooManyConnectionsError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    try:
        count: int = await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return count
    finally:
        await conn.close()


def measure(
    wrk: str,
    server: Server,
    scenario: str,
    mode: str,
    n: int,
    args: argparse.Namespace,
    fixture: Path,
) -> Run:
    sessions = asyncio.run(_sessions())
    before = cache_counts(server) if server.metrics_port else None
    raw = run_wrk(wrk, server, scenario, args, fixture, args.duration)
    cache = None
    if before is not None:
        after = cache_counts(server)
        cache = {k: after[k] - before[k] for k in COUNTS}
        cache["helper_cpu_seconds"] = raw["helper_cpu_seconds"]
    time.sleep(1.5)  # backends report their statistics about once a second
    # Connections opened to the bench database during the run, less our own probe:
    # a pool that keeps its connections opens none.
    opened = max(asyncio.run(_sessions()) - sessions - 1, 0)
    seconds = raw["duration_us"] / 1e6
    requests = raw["requests"]
    errors = {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")}
    run = Run(
        scenario=scenario,
        mode=mode,
        server=server.name,
        round=n,
        requests=requests,
        seconds=round(seconds, 2),
        rps=round(requests / seconds, 1),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
        cpu_ms_per_request=round(1000 * raw["cpu_seconds"] / max(requests, 1), 3),
        db_sessions=opened,
        load_average=os.getloadavg()[0],
        cache=cache,
    )
    line = (
        f"  {scenario:<6} {mode:<4} {server.name:<9} round {n}: {run.rps:8.1f} req/s  "
        f"p50 {run.p50_ms:7.1f} ms  p99 {run.p99_ms:7.1f} ms  "
        f"errors {sum(errors.values())}  cpu {run.cpu_ms_per_request:.2f} ms/req  "
        f"new db connections {opened}  load {run.load_average:.1f}"
    )
    if cache is not None:
        ratios = cache_ratios(cache)
        helper_cpu = 1000 * cache["helper_cpu_seconds"] / max(requests, 1)
        line += (
            f"  cache hits {ratios['hit_ratio']:.1%}  "
            f"principal hits {ratios['principal_hit_ratio']:.1%}  "
            f"redis cpu {helper_cpu:.3f} ms/req"
        )
    print(line, flush=True)
    return run


def target(scenario: str, mode: str) -> float:
    """The least ratio API / reference for a scenario in a mode."""
    if mode == CACHED:
        return CACHED_TARGETS.get(scenario, SCENARIOS[scenario])
    return SCENARIOS[scenario]


def summarise(runs: list[Run], scenario: str, mode: str) -> dict[str, Any]:
    def of(server: str) -> dict[str, Any]:
        mine = [r for r in runs if r.scenario == scenario and r.mode == mode and r.server == server]
        requests = sum(r.requests for r in mine)
        return {
            "rps": requests / sum(r.seconds for r in mine),
            "p50": statistics.median(r.p50_ms for r in mine),
            "p99": max(r.p99_ms for r in mine),
            "errors": sum(sum(r.errors.values()) for r in mine),
            "cpu": sum(r.cpu_ms_per_request * r.requests for r in mine) / max(requests, 1),
            "db_sessions": sum(r.db_sessions for r in mine),
            "rounds": [r.rps for r in sorted(mine, key=lambda r: r.round)],
            "cache": _cache_summary(mine, requests),
        }

    api, ref = of(MODES[mode][0]), of(REF)
    pairs = [a / b for a, b in zip(api["rounds"], ref["rounds"], strict=True) if b]
    ratio = api["rps"] / ref["rps"] if ref["rps"] else 0.0
    goal = target(scenario, mode)
    missed = []
    if ratio < goal:
        missed.append(f"ratio < {goal}")
    if api["p99"] >= P99_TARGET_MS:
        missed.append(f"p99 >= {P99_TARGET_MS:.0f} ms")
    if api["errors"]:
        missed.append("errors")
    return {
        "scenario": scenario,
        "mode": mode,
        "api": api,
        "reference": ref,
        "ratio": ratio,
        "pair_ratios": pairs,
        "target": goal,
        "missed": missed,
    }


def _cache_summary(runs: list[Run], requests: int) -> dict[str, float] | None:
    counted = [r.cache for r in runs if r.cache is not None]
    if not counted:
        return None
    totals = {k: sum(c[k] for c in counted) for k in (*COUNTS, "helper_cpu_seconds")}
    return {
        **totals,
        **cache_ratios(totals),
        "helper_cpu_ms_per_request": 1000 * totals["helper_cpu_seconds"] / max(requests, 1),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def render(summaries: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# TaskHub API vs raw-asyncpg reference ({meta['finished']})",
        "",
        f"- machine: {meta['cores']} cores ({meta['cpu']}), Python {meta['python']}, "
        f"PostgreSQL {meta['postgres']}",
        f"- data: {meta['users']:,} users, {meta['tasks']:,} tasks (`taskhub_bench`)",
        f"- load: wrk {meta['connections']} connections, {meta['threads']} thread(s), "
        f"{meta['duration']:g} s per run, {meta['rounds']} round(s) per server and scenario "
        f"(A,B then B,A), {meta['warmup']:g} s warm-up each; pool "
        f"{meta['pool_size']}+{meta['max_overflow']} connections in both",
        f"- other load on the machine: load average {meta['load_before']:.1f} before, "
        f"{meta['load_after']:.1f} after (2 cores; other work was running)",
        f"- code under test: `{meta['code']}`",
        f"- command: `{meta['command']}`",
        "",
        "| scenario | mode | API req/s | reference req/s | ratio (target) | per round | "
        "API p50 / p99 ms | reference p50 / p99 ms | API errors | reference errors | "
        "CPU ms/req API / reference | CPU ratio | new DB connections API / reference "
        "| targets |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        api, ref = s["api"], s["reference"]
        verdict = "met" if not s["missed"] else "**missed**: " + ", ".join(s["missed"])
        per_round = " / ".join(f"{r:.2f}" for r in s["pair_ratios"])
        lines.append(
            f"| {s['scenario']} | {s['mode']} | {api['rps']:,.0f} | {ref['rps']:,.0f} | "
            f"**{s['ratio']:.2f}** (>= {s['target']}) | {per_round} | "
            f"{api['p50']:.1f} / {api['p99']:.1f} | {ref['p50']:.1f} / {ref['p99']:.1f} | "
            f"{api['errors']} | {ref['errors']} | {api['cpu']:.2f} / {ref['cpu']:.2f} | "
            f"{ref['cpu'] / api['cpu'] if api['cpu'] else 0:.2f} | "
            f"{api['db_sessions']} / {ref['db_sessions']} | {verdict} |"
        )
    lines += [
        "",
        "Ratio: API req/s over reference req/s, all rounds; per round: each round's pair. "
        "p50: median of the rounds; p99: the worst round. Errors: socket errors, timeouts "
        "and responses >= 400. CPU ms/req: CPU time of the server process per request; "
        "CPU ratio: reference over API (the ratio's CPU counterpart, less sensitive to "
        "other load). Mode: fast, the default settings; off, every fast path off "
        "(kit/internals.py); cached, the Redis cache on and the principal cache at its "
        "default (the reference is uncached in every mode). "
        "New DB connections: sessions opened to the bench database during the measured "
        f"runs (pool churn). Targets: the ratio, and for the API p99 < {P99_TARGET_MS:.0f} ms "
        "and no errors.",
        "",
    ]
    cached = [s for s in summaries if s["api"]["cache"] is not None]
    if cached:
        lines += [
            "| scenario | mode | requests | cache lookups | cache hit ratio | "
            "principal reads | requests without a principal read | Redis CPU ms/req |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in cached:
            c = s["api"]["cache"]
            lookups = c["hit"] + c["miss"] + c["bypass"]
            lines.append(
                f"| {s['scenario']} | {s['mode']} | {c['requests']:,.0f} | {lookups:,.0f} | "
                f"**{c['hit_ratio']:.1%}** | {c['principal_reads']:,.0f} | "
                f"{c['principal_hit_ratio']:.1%} | {c['helper_cpu_ms_per_request']:.3f} |"
            )
        lines += [
            "",
            "From the API's own metrics over the measured rounds: cache lookups "
            "(`taskhub_cache_requests_total`: hit, miss, bypass), principal reads "
            "(`taskhub_db_reads_total` less the lookups that found no entry), requests "
            "(`taskhub_http_requests_total`). Redis CPU: the run's redis-server, per "
            "request (not in the API's CPU column).",
            "",
        ]
    return "\n".join(lines)


def open_loop(
    wrk: str,
    api: Server,
    ref: Server,
    scenario: str,
    data: fixtures.Fixtures,
    args: argparse.Namespace,
    fixture_file: Path,
) -> list[dict[str, Any]]:
    """The reference's capacity (closed loop), then each load's rate against both
    servers, interleaved; one row per server and rate."""
    for server in (api, ref):
        run_wrk(wrk, server, scenario, args, fixture_file, args.warmup)
    capacity = measure(wrk, ref, scenario, "fast", 0, args, fixture_file).rps
    points = []
    for n, load in enumerate(args.loads):
        rate = round(capacity * load)
        for server in (api, ref) if n % 2 == 0 else (ref, api):
            cpu = server.cpu_seconds()
            result = openloop.measure(
                server.url, openloop.METHODS[scenario], data[scenario], rate, args.point_duration
            )
            server_cpu = 1000 * (server.cpu_seconds() - cpu) / max(result.requests, 1)
            point = {
                "scenario": scenario,
                "capacity_rps": capacity,
                "load": load,
                "server": server.name,
                **asdict(result),
                "server_cpu_ms_per_request": round(server_cpu, 3),
                "load_average": os.getloadavg()[0],
            }
            print(
                f"  {scenario:<6} {load:4.0%} {rate:6d} req/s {server.name:<9}: achieved "
                f"{result.achieved_rps:8.1f}  p50 {result.p50_ms:7.1f} ms  "
                f"p99 {result.p99_ms:7.1f} ms  max {result.max_ms:7.1f} ms  "
                f"errors {_errors(result.errors)}  late {result.late}  "
                f"connections {result.connections}  cpu {server_cpu:.2f} ms/req "
                f"(generator {result.generator_cpu_ms_per_request:.2f})",
                flush=True,
            )
            points.append(point)
    return points


def open_loop_verdicts(points: list[dict[str, Any]]) -> dict[tuple[str, float], list[str]]:
    """The targets each (scenario, load) misses: at OPEN_LOOP_TARGET_LOAD the API's p99
    and no errors; at every load the API's p99 against the reference's."""
    missed: dict[tuple[str, float], list[str]] = {}
    for point in points:
        if point["server"] == REF:
            continue
        key = (point["scenario"], point["load"])
        ref = next(p for p in points if p["server"] == REF and (p["scenario"], p["load"]) == key)
        mine = missed.setdefault(key, [])
        if point["load"] == OPEN_LOOP_TARGET_LOAD:
            target = OPEN_LOOP_P99_MS[point["scenario"]]
            if point["p99_ms"] >= target:
                mine.append(f"p99 >= {target:.0f} ms")
            if sum(point["errors"].values()):
                mine.append("errors")
        if point["p99_ms"] > OPEN_LOOP_P99_RATIO * ref["p99_ms"]:
            mine.append(f"p99 > {OPEN_LOOP_P99_RATIO}x reference")
    return missed


def _errors(errors: dict[str, int]) -> str:
    """``0``, or the total and its kinds: ``5 (status 3, timeout 2)``."""
    kinds = ", ".join(f"{kind} {n}" for kind, n in errors.items() if n)
    return f"{sum(errors.values())} ({kinds})" if kinds else "0"


def render_open_loop(points: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    verdicts = open_loop_verdicts(points)
    lines = [
        f"# Latency at a fixed offered rate ({meta['finished']})",
        "",
        f"- machine: {meta['cores']} cores ({meta['cpu']}), Python {meta['python']}, "
        f"PostgreSQL {meta['postgres']}; load average {meta['load_before']:.1f} before, "
        f"{meta['load_after']:.1f} after",
        f"- data: {meta['users']:,} users, {meta['tasks']:,} tasks (`taskhub_bench`)",
        f"- capacity: the reference's closed-loop req/s (wrk {meta['connections']} "
        f"connections, {meta['duration']:g} s after {meta['warmup']:g} s warm-up of each "
        f"server); then bench/openloop.py at a constant rate, {meta['point_duration']:g} s "
        "per point, API (default mode) and reference in turn (A,B then B,A); pool "
        f"{meta['pool_size']}+{meta['max_overflow']} connections in both",
        f"- code under test: `{meta['code']}`",
        f"- command: `{meta['command']}`",
        "",
        "| scenario | load | rate req/s | server | achieved req/s | p50 ms | p90 ms | p99 ms | "
        "max ms | errors | late sends | connections | CPU ms/req server / generator "
        "| targets |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        key = (p["scenario"], p["load"])
        verdict = ""
        if p["server"] != REF:
            missed = verdicts[key]
            verdict = "met" if not missed else "**missed**: " + ", ".join(missed)
        lines.append(
            f"| {p['scenario']} | {p['load']:.0%} | {p['offered_rps']:,.0f} | {p['server']} | "
            f"{p['achieved_rps']:,.0f} | {p['p50_ms']:.1f} | {p['p90_ms']:.1f} | "
            f"**{p['p99_ms']:.1f}** | {p['max_ms']:.1f} | {_errors(p['errors'])} | "
            f"{p['late']} | {p['connections']} | {p['server_cpu_ms_per_request']:.2f} / "
            f"{p['generator_cpu_ms_per_request']:.2f} | {verdict} |"
        )
    targets = ", ".join(f"{s} {ms:.0f} ms" for s, ms in OPEN_LOOP_P99_MS.items())
    lines += [
        "",
        "Load: share of the reference's capacity in this run. Latency: from each request's "
        "due time (start + i / rate) to the end of its response, so waiting in the "
        "generator, for a connection or in the server's queue counts. Errors: responses "
        f">= 400, timeouts ({openloop.TIMEOUT_S:g} s) and connection errors. Late sends: "
        f"requests written more than {1000 * openloop.LATE_S:.0f} ms after their due time. "
        "Connections: opened by the generator (it keeps them alive). Targets, for the "
        f"API: at {OPEN_LOOP_TARGET_LOAD:.0%}, p99 under {targets} and no errors; at every "
        f"load, p99 no more than {OPEN_LOOP_P99_RATIO}x the reference's.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds per server")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and scenario")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help=f"the API's modes, of {','.join(MODES)}",
    )
    # Default: the API's own pool settings (TASKHUB_DB__* or the code's defaults).
    parser.add_argument("--pool-size", type=int, default=Settings().db.pool_size)
    parser.add_argument("--max-overflow", type=int, default=Settings().db.max_overflow)
    parser.add_argument("--api-port", type=int, default=8101)
    parser.add_argument("--reference-port", type=int, default=8102)
    parser.add_argument("--api-off-port", type=int, default=8103)
    # The cached mode's API serves on --api-port (one API server runs at a time).
    parser.add_argument("--redis-port", type=int, default=8104, help="the run's redis-server")
    parser.add_argument("--metrics-port", type=int, default=8105, help="the cached API's")
    parser.add_argument(
        "--open-loop", action="store_true", help="latency at fixed rates (default mode only)"
    )
    parser.add_argument("--loads", default="0.25,0.5,0.75", help="open loop: capacity shares")
    parser.add_argument("--point-duration", type=float, default=20, help="open loop: seconds")
    args = parser.parse_args(argv)
    args.loads = [float(x) for x in args.loads.split(",") if x]
    if not args.loads or not all(0 < x <= 2 for x in args.loads):
        parser.error("loads: shares of capacity in (0, 2], e.g. 0.25,0.5,0.75")
    if args.open_loop:
        args.modes = "fast"
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or (unknown := set(args.modes) - set(MODES)):
        parser.error(f"modes: one or more of {sorted(MODES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    wrk = ensure_wrk()
    asyncio.run(seed.seed())
    if deleted := asyncio.run(delete_created_tasks()):
        print(f"bench: removed {deleted:,} tasks left by an earlier create run")

    overrides = api_environment(
        args.pool_size, args.max_overflow, redis_url=f"redis://127.0.0.1:{args.redis_port}/0"
    )
    os.environ.update(overrides)
    env = dict(os.environ)
    fixture_file = RESULTS / "fixtures.lua"
    data = fixtures.build(fixture_file)
    # The same fixtures for bench/openloop.py run on its own.
    (RESULTS / "fixtures.json").write_text(json.dumps(data))
    ports = {"fast": args.api_port, "off": args.api_off_port, CACHED: args.api_port}
    store = redis_server(args.redis_port)
    apis = {}
    for mode in args.modes:
        name, settings = MODES[mode]
        port = str(ports[mode])
        metrics_port = args.metrics_port if mode == CACHED else 0
        command = [str(BIN / "taskhub"), "api", "--host", "127.0.0.1", "--port", port]
        command += ["--workers", "1", "--metrics-port", str(metrics_port)]
        apis[mode] = Server(name, ports[mode], command, settings, metrics_port=metrics_port)
        if mode == CACHED:
            apis[mode].helpers.append(store)
    ref = Server(REF, args.reference_port, [str(BIN / "python"), "bench/reference_app.py"])
    ref.command += ["--port", str(args.reference_port)]

    runs: list[Run] = []
    points: list[dict[str, Any]] = []
    try:
        with running([store, ref], env):
            for mode, api in apis.items():
                if mode == CACHED:
                    flush(store)
                with running([api], env):
                    check_same_answers(api, ref, data)
                    print(
                        f"bench: {mode} mode: both servers answer alike; wrk -c{args.connections}"
                    )
                    for scenario in args.scenarios:
                        if args.open_loop:
                            points += open_loop(wrk, api, ref, scenario, data, args, fixture_file)
                            continue
                        if mode == CACHED:
                            flush(store)  # cold: the warm-up fills the cache
                        for server in (api, ref):
                            run_wrk(wrk, server, scenario, args, fixture_file, args.warmup)
                        for n in range(1, args.rounds + 1):
                            order = (api, ref) if n % 2 else (ref, api)
                            runs += [
                                measure(wrk, s, scenario, mode, n, args, fixture_file)
                                for s in order
                            ]
    finally:
        asyncio.run(delete_created_tasks())

    meta = {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "postgres": asyncio.run(_server_version()),
        "users": USERS,
        "tasks": TASKS,
        "connections": args.connections,
        "threads": args.threads,
        "duration": args.duration,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "pool_size": args.pool_size,
        "max_overflow": args.max_overflow,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "elapsed_s": round(time.monotonic() - started),
        "code": str(Path(taskhub_api.__file__).parent),
    }
    if args.open_loop:
        meta["point_duration"] = args.point_duration
        table = render_open_loop(points, meta)
        name, raw = "openloop", {"meta": meta, "points": points}
    else:
        summaries = [summarise(runs, s, m) for s in args.scenarios for m in args.modes]
        table = render(summaries, meta)
        name = "latest"
        raw = {"meta": meta, "summaries": summaries, "runs": [asdict(r) for r in runs]}
    (RESULTS / f"{name}.md").write_text(table)
    (RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=2))
    print()
    print(table)
    print(f"bench: written to {RESULTS / name}.md ({meta['elapsed_s']} s)")


async def _server_version() -> str:
    conn = await asyncpg.connect(DB_DSN)
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
