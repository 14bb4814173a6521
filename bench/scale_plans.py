"""EXPLAIN (ANALYZE, BUFFERS) of the SQL each list read of bench/scale.py runs.

For one seeded database (``BENCH_DB_NAME``): per read and audience, the SQL of the API's
own ``build_list_query`` with the read's filters, sort and (for page 50) position,
prepared and executed as a custom plan, as a generic plan and as PostgreSQL's plan
cache runs it after five executions (``plan_cache_mode = auto``, as the API's asyncpg
statements run), and whether each reads more rows than the page. Writes
``bench/results/explain-<db>.md`` (a summary table and every plan) and ``.json``.

    BENCH_DB_NAME=taskhub_scale_10m .venv/bin/python bench/scale_plans.py
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

import fixtures
from common import DB_DSN, DB_NAME, RESULTS
from scale import AUDIENCES, DEEP_PAGES, PAGE, READS, context, database_meta, filters_of, params_for
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.repository import SORTS, build_list_query, fetch_live

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
        ctx, meta = await context(conn), await database_meta(conn)
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


if __name__ == "__main__":
    asyncio.run(explain())
