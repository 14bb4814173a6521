"""Scale: the same reads and writes at two data sizes with the same ~1,000 tasks per user.

``measure`` runs against one seeded database (``BENCH_DB_NAME``, as every bench script):
the API as bench/run.py starts it (``taskhub api``, 1 worker, cache and rate limits off,
no principal cache), then per request kind a short warm-up and a wrk run at a low fixed
concurrency (latency of single requests, not throughput): the first list page, a page
50 pages deep (reached through next cursors), each filter and each sort on its own,
full-text search, get and create, as a regular user (the owner-or-assignee query) and
as a viewer (every task). ``explain`` runs EXPLAIN (ANALYZE, BUFFERS) of the SQL each
list read runs (``build_list_query``), with the custom and the generic plan, and says
which plans read more rows than the page. The default command measures each database
in turn (in a process of its own, alternating the order between rounds) and compares
them: p50 and p99 per request kind, the ratio, and the target (every keyset read
within 1.2x of its p50 and p99 at the first database).

    .venv/bin/python bench/scale.py --databases taskhub_scale_1m,taskhub_scale_10m
    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/scale.py measure
    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/scale.py explain

Seed the databases first (bench/seed.py --tasks/--users); this script never seeds or
migrates one. Results: ``bench/results/scale.md`` and ``.json``, ``scale-<db>.json``,
``explain-<db>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg

import fixtures
import run
from common import BIN, CREATED_PREFIX, DB_DSN, DB_NAME, DB_URL, RESULTS, ROOT
from taskhub_api.identity.tokens import issue_access_token
from taskhub_api.settings import Settings
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.repository import SORTS, build_list_query, fetch_live
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


async def _meta(conn: asyncpg.Connection) -> dict[str, Any]:
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


def _environment() -> dict[str, str]:
    """The API's settings as bench/run.py starts it (the database path: no cache, no
    rate limit, the principal read on every request)."""
    return {
        "TASKHUB_DB__URL": DB_URL,
        "TASKHUB_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "TASKHUB_LOG_LEVEL": "WARNING",
        "TASKHUB_LOG_JSON": "false",
        "TASKHUB_CACHE__ENABLED": "false",
        "TASKHUB_RATELIMIT__ENABLED": "false",
        "TASKHUB_AUTH__PRINCIPAL_CACHE_SECONDS": "0",
        "TASKHUB_REDIS__KEY_PREFIX": "taskhub-bench:",
    }


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
    os.environ.update(_environment())
    env = dict(os.environ)
    settings = Settings()
    callers = asyncio.run(_callers(settings))

    async def prepare() -> tuple[Context, dict[str, Any]]:
        conn = await asyncpg.connect(DB_DSN)
        try:
            return await context(conn), await _meta(conn)
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


# --- explain ---------------------------------------------------------------------------

# Nodes that read table rows (a Bitmap Index Scan's rows are read again by its heap scan).
_ROW_SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _literal(value: Any) -> str:
    """A quoted SQL literal, left for PostgreSQL to cast to the parameter's type."""
    if isinstance(value, list):
        text = "{" + ",".join(f'"{v}"' for v in value) + "}"
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"


def _scans(node: dict[str, Any], out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if node["Node Type"] in _ROW_SCANS:
        removed = node.get("Rows Removed by Filter", 0) + node.get(
            "Rows Removed by Index Recheck", 0
        )
        out.append(
            {
                "node": node["Node Type"],
                "on": node.get("Index Name") or node.get("Relation Name", ""),
                "rows_read": (node["Actual Rows"] + removed) * node["Actual Loops"],
            }
        )
    for child in node.get("Plans", []):
        _scans(child, out)
    return out


async def _explain(conn: asyncpg.Connection, args: list[Any], mode: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the prepared statement ``scale_q`` as a custom or a
    generic plan (what the API's prepared statements run: PostgreSQL picks one of the
    two after five executions)."""
    await conn.execute(f"SET plan_cache_mode = {mode}")
    execute = "EXECUTE scale_q(" + ", ".join(_literal(a) for a in args) + ")"
    # Warm: the figures are of a later run. Under "auto" (the API's setting) six runs
    # first, as PostgreSQL's plan cache decides between the two after five.
    for _ in range(6 if mode == "auto" else 1):
        await conn.execute(execute)
    plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute}"))[0]
    text = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")
    scans = _scans(plan["Plan"], [])
    top = plan["Plan"]
    return {
        "rows_read": sum(s["rows_read"] for s in scans),
        "scans": scans,
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "read_blocks": top.get("Shared Read Blocks", 0),
        "ms": round(plan["Execution Time"], 3),
        "text": "\n".join(r[0] for r in text),
        # A generic plan shows its parameters ($n) in its conditions, and estimates
        # LIMIT $n at a tenth of its input.
        "generic": "$" in "".join(r[0] for r in text) or top["Plan Rows"] > PAGE + 1,
    }


class _Capture:
    """Stands in for a connection to catch the SQL a repository function sends."""

    sql = ""

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.sql = sql


async def _get_sql() -> str:
    capture = _Capture()
    await fetch_live(capture, uuid.uuid4())
    return capture.sql


async def _deep_position(
    conn: asyncpg.Connection, visible_to: Any, filters: TaskFilters, sort: str
) -> list[Any] | None:
    """The position the API's page DEEP_PAGES starts after (its cursor's values)."""
    after = None
    for _ in range(DEEP_PAGES - 1):
        sql, args = build_list_query(
            visible_to=visible_to, filters=filters, sort=SORTS[sort], after=after, limit=PAGE + 1
        )
        rows = await conn.fetch(sql, *args)
        if len(rows) <= PAGE:
            return None
        last = rows[PAGE - 1]
        after = [last[c] for c in SORTS[sort].columns] + [last["id"]]
    return after


async def explain() -> dict[str, Any]:
    conn = await asyncpg.connect(DB_DSN, statement_cache_size=0)
    try:
        ctx, meta = await context(conn), await _meta(conn)
        users = await fixtures._token_users(conn)
        me = users[len(users) // 2]["id"]
        meta["user_tasks"] = users[len(users) // 2]["tasks"]
        plans = []
        for audience in AUDIENCES:
            for read in READS:
                params = params_for(read, ctx, str(me), audience)
                filters, sort = filters_of(params)
                visible_to = me if audience == "user" else None
                after = await _deep_position(conn, visible_to, filters, sort) if read.deep else None
                sql, args = build_list_query(
                    visible_to=visible_to,
                    filters=filters,
                    sort=SORTS[sort],
                    after=after,
                    limit=PAGE + 1,
                )
                await conn.execute(f"PREPARE scale_q AS {sql}")
                entry: dict[str, Any] = {
                    "kind": read.name,
                    "audience": audience,
                    "sql": sql,
                    "args": [_literal(a) for a in args],
                }
                for mode in ("custom", "generic"):
                    entry[mode] = await _explain(conn, args, f"force_{mode}_plan")
                entry["auto"] = await _explain(conn, args, "auto")
                # The page: at most PAGE + 1 rows per branch of the query (a regular
                # user's two, twice that for the nullable due_at sorts).
                entry["bound"] = (PAGE + 1) * max(1, sql.count("(SELECT id, "))
                await conn.execute("DEALLOCATE scale_q")
                plans.append(entry)
                c, g = entry["custom"], entry["generic"]
                print(
                    f"  {DB_NAME} {audience:<4} {read.name:<24} custom {c['rows_read']:>9,} rows "
                    f"{c['ms']:9.2f} ms | generic {g['rows_read']:>9,} rows {g['ms']:9.2f} ms"
                    f" | the API's: {'generic' if entry['auto']['generic'] else 'custom'}",
                    flush=True,
                )
        task_id = await conn.fetchval("SELECT id FROM task WHERE owner_id = $1 LIMIT 1", me)
        await conn.execute(f"PREPARE scale_q AS {await _get_sql()}")
        meta["get_plan"] = (await _explain(conn, [task_id], "force_generic_plan"))["text"]
    finally:
        await conn.close()
    result = {"meta": meta, "plans": plans}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"explain-{DB_NAME}.json").write_text(json.dumps(result, indent=2, default=str))
    (RESULTS / f"explain-{DB_NAME}.md").write_text(render_explain(result))
    return result


def _bounded(entry: dict[str, Any], mode: str) -> bool:
    return bool(entry[mode]["rows_read"] <= entry["bound"])


def render_explain(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"# EXPLAIN (ANALYZE, BUFFERS) of the list reads: {meta['database']} "
        f"({meta['tasks']:,} tasks, {meta['users']:,} users, schema {meta['schema']})",
        "",
        f"Regular user: the median of bench/fixtures.py's users ({meta['user_tasks']:,} tasks "
        "owned). Rows read: rows the table and index scans produced plus those their "
        "filters removed (times loops); page-bounded: no more than 21 rows per branch of "
        "the query (one; a regular user's two; twice as many for the due_at sorts). Each "
        "plan's second run, warm. The API's plan: the one PostgreSQL's plan cache "
        "chooses after five runs of the prepared statement (plan_cache_mode auto, as the "
        "API's asyncpg statements run).",
        "",
        "| audience | read | custom plan: rows read | buffers | ms | generic plan: rows read "
        "| buffers | ms | page-bounded | the API's plan | scans (custom) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for e in result["plans"]:
        c, g = e["custom"], e["generic"]
        bounded = {
            (True, True): "yes",
            (False, False): "**no**",
            (True, False): "custom only",
            (False, True): "generic only",
        }[(_bounded(e, "custom"), _bounded(e, "generic"))]
        scans = ", ".join(f"{s['node']} {s['on']} ({s['rows_read']:,})" for s in c["scans"])
        lines.append(
            f"| {e['audience']} | {e['kind']} | {c['rows_read']:,} | {c['buffers']:,} | "
            f"{c['ms']:.2f} | {g['rows_read']:,} | {g['buffers']:,} | {g['ms']:.2f} | "
            f"{bounded} | {'generic' if e['auto']['generic'] else 'custom'} | {scans} |"
        )
    lines += ["", "## Plans", ""]
    for e in result["plans"]:
        lines += [f"### {e['audience']}: {e['kind']}", "", "```sql", e["sql"], "```", ""]
        lines += [f"Parameters: {', '.join(e['args'])}", ""]
        for mode in ("custom", "generic"):
            lines += [f"{mode} plan:", "", "```", e[mode]["text"], "```", ""]
    lines += ["### get", "", "```", meta["get_plan"], "```", ""]
    return "\n".join(lines)


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
    parser.add_argument(
        "action", nargs="?", default="compare", choices=("compare", "measure", "explain")
    )
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
    elif args.action == "explain":
        asyncio.run(explain())
    else:
        if len(args.databases) != 2:
            parser.error("--databases: two, the smaller first")
        compare(args)


if __name__ == "__main__":
    main()
