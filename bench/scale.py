"""Scale: the same reads and writes at two data sizes with the same ~1,000 tasks per user.

``measure`` runs against one seeded database (``BENCH_DB_NAME``, as every bench script):
the API as bench/run.py starts it (``taskhub api``, 1 worker, cache and rate limits off,
no principal cache), then per request kind a short warm-up and a wrk run at a low fixed
concurrency (latency of single requests, not throughput): the first list page, a page
50 pages deep (reached through next cursors), each filter and each sort on its own,
full-text search, get and create, as a regular user (the owner-or-assignee query) and
as a viewer (every task); bench/scale_plans.py explains the same list reads. The
default command measures each database in turn (in a process of its own, alternating
the order between rounds) and compares them: p50 and p99 per request kind, the ratio,
and the target (every keyset read within 1.2x of its p50 and p99 at the first database).

    .venv/bin/python bench/scale.py --databases taskhub_scale_1m,taskhub_scale_10m
    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/scale.py measure
    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/scale_plans.py

Seed the databases first (bench/seed.py --tasks/--users); this script never seeds or
migrates one. Results: ``bench/results/scale.md`` and ``.json``, ``scale-<db>.json``,
and bench/scale_plans.py's ``explain-<db>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg

import fixtures
import run
from common import BIN, CREATED_PREFIX, DB_DSN, DB_NAME, RESULTS, ROOT, api_environment
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.repository import SORTS
from taskhub_api.tasks.schemas import TaskListQuery

TARGET_RATIO = 1.2
PAGE = 20
DEEP_PAGES = 50
VIEWERS = 4
# Placeholders in a read's parameters: the token's own user, another (regular) user,
# and the seed's "now" (the newest task's hour), so that both databases see the same
# share of tasks in a due-date range.
ME, SOMEONE = "@me", "@someone"


@dataclass(frozen=True)
class Read:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    deep: bool = False


def _reads() -> list[Read]:
    sorts = [Read(f"sort={s}", {"sort": s}) for s in SORTS if s != "-created_at"]
    return [
        Read("first page"),
        Read(f"page {DEEP_PAGES}", deep=True),
        Read("status=todo", {"status": ["todo"]}),
        Read("priority=urgent", {"priority": ["urgent"]}),
        Read("assignee_id", {"assignee_id": SOMEONE}),
        Read("label=security", {"label": ["security"]}),
        Read("label=bug&label=k8s", {"label": ["bug", "k8s"]}),
        Read("due_before=now", {"due_before": 0}),
        Read("due_after=now", {"due_after": 0}),
        Read("due in the last 7 days", {"due_after": -7, "due_before": 0}),
        Read("q=helm", {"q": "helm"}),
        Read("q=dashboard release", {"q": "dashboard release"}),
        *sorts,
    ]


READS = _reads()
# "user": regular users (the owner-or-assignee query); "all": viewers (every task).
AUDIENCES = ("user", "all")


@dataclass
class Context:
    """What a database's reads are resolved against."""

    now: datetime
    someone: str  # a regular user's id, for the viewers' assignee filter


def params_for(read: Read, ctx: Context, me: str, audience: str) -> dict[str, Any]:
    """The read's query parameters for one caller: a regular user filters on tasks
    assigned to them, a viewer on another user's."""
    out: dict[str, Any] = {"limit": PAGE}
    for key, value in read.params.items():
        if value == SOMEONE:
            value = me if audience == "user" else ctx.someone
        elif key.startswith("due_"):
            value = (ctx.now + timedelta(days=value)).isoformat()
        out[key] = value
    return out


def path_of(params: dict[str, Any]) -> str:
    return "/api/v1/tasks?" + urlencode(params, doseq=True)


def filters_of(params: dict[str, Any]) -> tuple[TaskFilters, str]:
    """The filters and sort the API's router makes of these parameters."""
    query = TaskListQuery.model_validate(params)
    filters = TaskFilters(
        statuses=tuple(s.value for s in query.status or ()),
        priorities=tuple(p.value for p in query.priority or ()),
        labels=tuple(query.label or ()),
        assignee_id=query.assignee_id,
        due_before=query.due_before,
        due_after=query.due_after,
        q=query.q,
    )
    return filters, query.sort.value


async def context(conn: asyncpg.Connection) -> Context:
    now = await conn.fetchval(
        "SELECT date_trunc('hour', max(created_at)) FROM task WHERE title NOT LIKE $1",
        CREATED_PREFIX + "%",
    )
    # The regular user with the median number of assigned tasks.
    someone = await conn.fetchval(
        'SELECT u.id FROM "user" u JOIN task t ON t.assignee_id = u.id '
        "WHERE u.roles = ARRAY['user'] GROUP BY u.id ORDER BY count(*), u.id "
        "OFFSET (SELECT count(*) / 2 FROM \"user\" WHERE roles = ARRAY['user']) LIMIT 1"
    )
    return Context(now=now, someone=str(someone))


async def database_meta(conn: asyncpg.Connection) -> dict[str, Any]:
    users, tasks = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM \"user\" WHERE username LIKE 'bench-user-%'), "
        "(SELECT count(*) FROM task WHERE title NOT LIKE $1)",
        CREATED_PREFIX + "%",
    )
    return {
        "database": DB_NAME,
        "users": users,
        "tasks": tasks,
        "schema": await conn.fetchval("SELECT version_num FROM alembic_version"),
        "postgres": str(await conn.fetchval("SHOW server_version")).split()[0],
    }


# --- measure ---------------------------------------------------------------------------


async def _callers(settings: Settings) -> dict[str, list[dict[str, str]]]:
    """Per audience, ``{"id", "token"}``: the wrk fixtures' regular users, and viewers."""
    data = await fixtures.collect(settings)
    auth = settings.auth.model_copy(update={"access_token_ttl_seconds": fixtures.TOKEN_TTL_SECONDS})
    conn = await asyncpg.connect(DB_DSN)
    try:
        users = [
            {
                "id": str(u["id"]),
                "token": issue_access_token(auth, u["id"], u["username"], ["user"]),
            }
            for u in await fixtures._token_users(conn)
        ]
        viewers = await conn.fetch(
            "SELECT id, username FROM \"user\" WHERE roles = ARRAY['viewer'] ORDER BY username "
            "LIMIT $1",
            VIEWERS,
        )
    finally:
        await conn.close()
    everyone = [
        {"id": str(v["id"]), "token": issue_access_token(auth, v["id"], v["username"], ["viewer"])}
        for v in viewers
    ]
    return {"user": users, "all": everyone, "get": data["get"], "create": data["create"]}


def _deep_path(server: run.Server, params: dict[str, Any], token: str) -> str | None:
    """The path of the page DEEP_PAGES pages in, following next cursors (None if the
    caller's list is shorter)."""
    cursor = None
    for _ in range(DEEP_PAGES - 1):
        page = {**params, "cursor": cursor} if cursor else params
        status, body = run._request(server.url + path_of(page), token)
        if status != 200:
            sys.exit(f"scale: {path_of(page)} answered {status}: {body[:200]!r}")
        cursor = json.loads(body)["meta"]["next_cursor"]
        if cursor is None:
            return None
    return path_of({**params, "cursor": cursor})


def _requests(
    server: run.Server, read: Read, ctx: Context, callers: list[dict[str, str]], audience: str
) -> tuple[list[dict[str, str]], float]:
    """The wrk fixtures of one read (each caller's path and token) and the mean items
    per page; exits if any answers other than 200."""
    out, items = [], []
    for caller in callers:
        params = params_for(read, ctx, caller["id"], audience)
        path = _deep_path(server, params, caller["token"]) if read.deep else path_of(params)
        if path is None:
            continue
        status, body = run._request(server.url + path, caller["token"])
        if status != 200:
            sys.exit(f"scale: {path} answered {status}: {body[:200]!r}")
        items.append(len(json.loads(body)["items"]))
        out.append({"path": path, "token": caller["token"]})
    return out, statistics.mean(items) if items else 0.0


def _wrk_point(
    wrk: str,
    server: run.Server,
    scenario: str,
    requests: list[dict[str, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    fixture_file = RESULTS / f"scale-{DB_NAME}.lua"
    fixture_file.write_text(f"return {{\n{scenario} = {fixtures._lua(requests)},\n}}\n")
    run.run_wrk(wrk, server, scenario, args, fixture_file, args.warmup)
    raw = run.run_wrk(wrk, server, scenario, args, fixture_file, args.duration)
    errors = sum(raw[k] for k in ("connect", "read", "write", "timeout", "status"))
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "cpu_ms_per_request": round(1000 * raw["cpu_seconds"] / max(raw["requests"], 1), 3),
        "load_average": os.getloadavg()[0],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wrk = run.ensure_wrk()
    if deleted := asyncio.run(run.delete_created_tasks()):
        print(f"scale: removed {deleted:,} tasks left by an earlier create run")
    os.environ.update(api_environment())
    env = dict(os.environ)
    settings = Settings()
    callers = asyncio.run(_callers(settings))

    async def prepare() -> tuple[Context, dict[str, Any]]:
        conn = await asyncpg.connect(DB_DSN)
        try:
            return await context(conn), await database_meta(conn)
        finally:
            await conn.close()

    ctx, meta = asyncio.run(prepare())
    command = [str(BIN / "taskhub"), "api", "--host", "127.0.0.1", "--port", str(args.port)]
    server = run.Server("api-scale", args.port, [*command, "--workers", "1", "--metrics-port", "0"])
    points: list[dict[str, Any]] = []
    meta["load_before"] = os.getloadavg()[0]
    try:
        with run.running([server], env):
            for audience in AUDIENCES:
                for read in READS:
                    requests, items = _requests(server, read, ctx, callers[audience], audience)
                    point = _wrk_point(wrk, server, "list", requests, args)
                    points.append(
                        {
                            "kind": read.name,
                            "audience": audience,
                            "callers": len(requests),
                            "items": round(items, 1),
                            **point,
                        }
                    )
                    _print(DB_NAME, points[-1])
            for kind in ("get", "create"):
                point = _wrk_point(wrk, server, kind, callers[kind], args)
                points.append(
                    {"kind": kind, "audience": "user", "callers": 16, "items": 1, **point}
                )
                _print(DB_NAME, points[-1])
    finally:
        asyncio.run(run.delete_created_tasks())
    meta["load_after"] = os.getloadavg()[0]
    meta["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta["connections"], meta["duration"] = args.connections, args.duration
    result = {"meta": meta, "points": points}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale-{DB_NAME}.json").write_text(json.dumps(result, indent=2))
    return result


def _print(db: str, p: dict[str, Any]) -> None:
    print(
        f"  {db:<20} {p['audience']:<4} {p['kind']:<24} {p['rps']:7.1f} req/s  "
        f"p50 {p['p50_ms']:7.2f}  p99 {p['p99_ms']:7.2f} ms  errors {p['errors']}  "
        f"cpu {p['cpu_ms_per_request']:.2f} ms/req  items {p['items']}  "
        f"load {p['load_average']:.1f}",
        flush=True,
    )


# --- compare ---------------------------------------------------------------------------


def _combine(rounds: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (audience, kind) over a database's rounds: median p50, worst p99 (as
    bench/run.py)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key in {(p["audience"], p["kind"]) for r in rounds for p in r["points"]}:
        mine = [p for r in rounds for p in r["points"] if (p["audience"], p["kind"]) == key]
        out[key] = {
            "p50_ms": statistics.median(p["p50_ms"] for p in mine),
            "p99_ms": max(p["p99_ms"] for p in mine),
            "requests": sum(p["requests"] for p in mine),
            "errors": sum(p["errors"] for p in mine),
            "cpu": statistics.median(p["cpu_ms_per_request"] for p in mine),
            "items": mine[0]["items"],
        }
    return out


def render(results: dict[str, list[dict[str, Any]]], command: str) -> str:
    (small, big), runs = list(results), list(results.values())
    base, scaled = _combine(runs[0]), _combine(runs[1])
    metas = [r[0]["meta"] for r in runs]
    loads = [
        f"{m['load_before']:.1f}-{m['load_after']:.1f}"
        for r in runs
        for m in [x["meta"] for x in r]
    ]
    lines = [
        f"# Scale: {metas[0]['tasks']:,} vs {metas[1]['tasks']:,} tasks ({metas[1]['finished']})",
        "",
        f"- data: `{small}` ({metas[0]['tasks']:,} tasks, {metas[0]['users']:,} users) and "
        f"`{big}` ({metas[1]['tasks']:,} tasks, {metas[1]['users']:,} users), schema "
        f"{metas[0]['schema']} / {metas[1]['schema']}, PostgreSQL {metas[0]['postgres']}",
        f"- load: wrk {metas[0]['connections']} connections, 1 thread, "
        f"{metas[0]['duration']:g} s per request kind after a warm-up, {len(runs[0])} round(s) "
        f"per database; the API as bench/run.py starts it (1 worker, cache, rate limits "
        f"and principal cache off); load average {', '.join(loads)}",
        f"- command: `{command}`",
        "",
        f"| audience | request | p50 ms {small} | p50 ms {big} | p50 ratio | "
        f"p99 ms {small} | p99 ms {big} | p99 ratio | requests | errors | "
        f"API CPU ms/req | items | target (<= {TARGET_RATIO}x) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = [(a, r.name) for a in AUDIENCES for r in READS] + [("user", "get"), ("user", "create")]
    for key in order:
        a, b = base.get(key), scaled.get(key)
        if a is None or b is None:
            continue
        r50 = b["p50_ms"] / a["p50_ms"] if a["p50_ms"] else 0.0
        r99 = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else 0.0
        missed = [n for n, r in (("p50", r50), ("p99", r99)) if r > TARGET_RATIO]
        if a["errors"] or b["errors"]:
            missed.append("errors")
        verdict = "met" if not missed else "**missed**: " + ", ".join(missed)
        if key[1] in ("get", "create"):
            verdict = "(not a keyset read)" if not missed else verdict.replace("missed", "over")
        lines.append(
            f"| {key[0]} | {key[1]} | {a['p50_ms']:.2f} | {b['p50_ms']:.2f} | {r50:.2f} | "
            f"{a['p99_ms']:.2f} | {b['p99_ms']:.2f} | {r99:.2f} | "
            f"{a['requests']:,} / {b['requests']:,} | {a['errors']} / {b['errors']} | "
            f"{a['cpu']:.2f} / {b['cpu']:.2f} | {a['items']:g} / {b['items']:g} | {verdict} |"
        )
    lines += [
        "",
        "p50: median of the rounds; p99: the worst round (wrk's latency histogram). "
        "Audience: user, 16 regular users in rotation (bench/fixtures.py's, owner or "
        "assignee); all, 4 viewers (every task). Items: mean rows on the page. "
        f"page {DEEP_PAGES}: the page reached through {DEEP_PAGES - 1} next cursors "
        "(the default sort), users with fewer pages left out.",
        "",
    ]
    return "\n".join(lines)


def compare(args: argparse.Namespace) -> None:
    """Measures each database in a process of its own, alternating the order between
    rounds (A,B then B,A), and writes the comparison."""
    databases = args.databases
    results: dict[str, list[dict[str, Any]]] = {db: [] for db in databases}
    for n in range(args.rounds):
        for db in databases if n % 2 == 0 else databases[::-1]:
            child = [str(BIN / "python"), str(Path(__file__).resolve()), "measure"]
            child += ["--connections", str(args.connections), "--duration", str(args.duration)]
            child += ["--warmup", str(args.warmup), "--port", str(args.port)]
            print(f"scale: round {n + 1}: {db}", flush=True)
            subprocess.run(child, check=True, cwd=ROOT, env={**os.environ, "BENCH_DB_NAME": db})
            results[db].append(json.loads((RESULTS / f"scale-{db}.json").read_text()))
    command = " ".join(["bench/scale.py", *sys.argv[1:]])
    table = render(results, command)
    (RESULTS / "scale.md").write_text(table)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=2))
    print()
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="compare", choices=("compare", "measure"))
    parser.add_argument("--databases", default="taskhub_scale_1m,taskhub_scale_10m")
    parser.add_argument("--rounds", type=int, default=1, help="compare: rounds per database")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=int, default=5, help="seconds per request kind")
    parser.add_argument("--warmup", type=int, default=1, help="seconds before each")
    parser.add_argument("--port", type=int, default=8111)
    args = parser.parse_args()
    args.databases = [d for d in args.databases.split(",") if d]
    if args.action == "measure":
        measure(args)
    else:
        if len(args.databases) != 2:
            parser.error("--databases: two, the smaller first")
        compare(args)


if __name__ == "__main__":
    main()
