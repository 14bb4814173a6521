"""``make bench-stack``: the API as ``make dev`` runs it, and the CPU of every process.

A stack of its own, apart from the machine's services and from ``make dev``'s:
scripts/devstack.sh under ``.local/benchstack`` (a PostgreSQL primary with a streaming
replica, PgBouncer in transaction mode in front of both, a Redis) and the project's own
RabbitMQ node (scripts/rabbitmq-node.sh, under ``.local/benchstack-rabbitmq``), all on
ports from ``--port-base``. The primary holds ``taskhub_bench`` seeded by bench/seed.py.
On it run the API (``taskhub api``: reads to the replica through PgBouncer, Redis cache
and rate limits on, the limits raised for the load's users), the outbox relay, the
event dispatcher, a Celery worker (2 pool processes), a mail sink and a webhook
receiver; one webhook, an admin's, takes every task event, so a create causes a
task.created event (one delivery) and, when it names an assignee, a task.assigned
event (one delivery and one mail).

For each uvicorn worker count and scenario (list, get, create; the wrk scripts of
bench/run.py), after a warm-up: one wrk run, the CPU time of every process tree
(bench/proctree.py) and, for create, the wait until every event the run caused is
published, dispatched and its jobs done. Writes ``bench/results/stack.md`` and
``stack.json``.

    .venv/bin/python bench/stack.py                       # 1 and 2 workers, 12 s runs
    .venv/bin/python bench/stack.py --seed-only           # start the stack and seed it
    .venv/bin/python bench/stack.py --workers 2 --scenarios create --keep-stack
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import proctree
import stackenv
from stackenv import DB, HOST, PORTS

if TYPE_CHECKING:
    from run import Server

# The processes of the stack (TaskHub's own and its services), in the tables' order;
# the sinks and wrk stand in for the outside world and are shown apart.
STACK = (
    "api",
    "primary",
    "replica",
    "pgbouncer",
    "redis",
    "relay",
    "dispatcher",
    "worker",
    "broker",
)
OUTSIDE = ("sinks", "wrk")
# An event's journey: the processes between the request and its last job.
JOURNEY = ("api", "primary", "relay", "dispatcher", "worker", "broker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts")
    parser.add_argument("--scenarios", default="list,get,create")
    parser.add_argument("--duration", type=float, default=12, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2))
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery pool")
    parser.add_argument("--webhooks", type=int, default=1, help="webhooks on every event")
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument(
        "--port-base",
        type=int,
        default=8111,
        help=f"{len(PORTS)} ports from here: " + ", ".join(PORTS),
    )
    parser.add_argument(
        "--tasks", type=int, default=None, help="tasks to seed (default: bench/seed.py's)"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="of the TaskHub processes (INFO: a line a job)"
    )
    parser.add_argument("--seed-only", action="store_true", help="start the stack, seed, stop")
    parser.add_argument(
        "--keep-stack", action="store_true", help="leave the data stack running afterwards"
    )
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.scenarios) - {"list", "get", "create"}:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.ports = {name: args.port_base + i for i, name in enumerate(PORTS)}
    return args


def spawn(servers: list[Server], env: dict[str, str], results: Path) -> None:
    """Starts processes that serve no HTTP (bench/run.py's ``running`` waits for an API),
    each in a session of its own so that ``run.stop`` ends all of its processes."""
    for server in servers:
        server.log = results / f"{server.name}.log"
        with server.log.open("wb") as log:
            server.process = subprocess.Popen(
                server.command,
                cwd=stackenv.ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    time.sleep(3)
    for server in servers:
        if server.process is None or server.process.poll() is not None:
            sys.exit(f"stack: {server.name} exited; see {server.log}")


def pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def create_webhooks(url: str, count: int, hook_port: int, dsn: str) -> None:
    """``count`` webhooks of an admin (who may read every task) on every task event."""
    import asyncpg

    import run
    from taskhub_api.identity.tokens import issue_access_token
    from taskhub_api.settings import Settings

    async def admin() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchrow(
                "SELECT id, username, roles FROM \"user\" WHERE roles = ARRAY['admin'] "
                "ORDER BY username LIMIT 1"
            )
        finally:
            await conn.close()

    user = asyncio.run(admin())
    token = issue_access_token(Settings().auth, user["id"], user["username"], list(user["roles"]))
    for n in range(count):
        body = json.dumps(
            {"url": f"http://{HOST}:{hook_port}/hook/{n}", "events": stackenv.HOOK_EVENTS}
        )
        status, answer = run._request(url + "/api/v1/webhooks", token, body)
        if status != 201:
            sys.exit(f"stack: creating a webhook answered {status}: {answer[:300]!r}")


def check_journey(
    url: str, data: dict[str, list[dict[str, str]]], dsn: str, webhooks: int, broker_port: int
) -> None:
    """One create, then its events through relay, dispatcher and worker to the sinks:
    every process works before anything is measured."""
    import run

    first = data["create"][0]
    status, answer = run._request(url + first["path"], first["token"], first["body"])
    if status != 201:
        sys.exit(f"stack: a create answered {status}: {answer[:300]!r}")
    seconds, state, _ = stackenv.wait_drained(dsn, webhooks, broker_port, 60)
    if not state.drained:
        sys.exit(f"stack: a create's events did not go through within 60 s: {state}")
    print(f"stack: a create's events went through in {seconds:.1f} s ({state})", flush=True)


def measure(
    wrk: str,
    api: Server,
    scenario: str,
    workers: int,
    roots: dict[str, int],
    args: argparse.Namespace,
    fixture_file: Path,
    dsn: str,
) -> dict[str, Any]:
    import run

    run.run_wrk(wrk, api, scenario, args, fixture_file, args.warmup)
    if scenario == "create":
        stackenv.wait_drained(dsn, args.webhooks, args.ports["broker"], args.drain_timeout)
        journey_before = asyncio.run(stackenv.journey(dsn, args.webhooks))
    metrics_before = stackenv.api_metrics(args.ports["metrics"])
    xacts_before = asyncio.run(stackenv.db_stats(args.ports))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = proctree.snapshot(roots)
    raw = run.run_wrk(wrk, api, scenario, args, fixture_file, args.duration)
    cpu_loaded = proctree.snapshot(roots)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    drain, probe = 0.0, 0.0
    journey: dict[str, Any] | None = None
    if scenario == "create":
        drain, state, probe = stackenv.wait_drained(
            dsn, args.webhooks, args.ports["broker"], args.drain_timeout
        )
        journey = {
            "drained": state.drained,
            "creates": state.created - journey_before.created,
            "events": state.events - journey_before.events,
            "jobs": state.done_jobs - journey_before.done_jobs,
            "left": {
                "outbox": state.pending,
                "jobs_not_done": state.other_jobs,
                "jobs_missing": max(state.expected_jobs - state.done_jobs, 0),
            },
        }
    else:
        time.sleep(1.5)  # backends report their statistics about once a second
    cpu_after = proctree.snapshot(roots)
    if journey is not None:  # after the snapshot: rabbitmqctl costs the broker some CPU
        journey["queues"] = stackenv.queue_depths(args.ports["broker"])
    xacts = proctree.delta(xacts_before, asyncio.run(stackenv.db_stats(args.ports)))
    metrics = stackenv.counter_delta(metrics_before, stackenv.api_metrics(args.ports["metrics"]))

    def grouped(cpu: dict[str, float]) -> dict[str, float]:
        cpu = dict(cpu)
        cpu["sinks"] = cpu.pop("mail") + cpu.pop("hook")
        return cpu

    cpu = grouped(proctree.delta(cpu_before, cpu_after))
    cpu["primary"] -= probe  # this script's own polling
    cpu["wrk"] = wrk_cpu
    requests = raw["requests"]
    # CPU per request: of the requests served in the window, which for create includes
    # those still in flight when wrk stopped (counted by their events; list and get
    # leave at most 64 of some thousands).
    served = journey["creates"] if journey else requests
    seconds = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")}
    row = {
        "scenario": scenario,
        "workers": workers,
        "requests": requests,
        "served": served,
        "seconds": round(seconds, 2),
        "rps": round(requests / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_seconds_under_load": {
            k: round(v, 3) for k, v in grouped(proctree.delta(cpu_before, cpu_loaded)).items()
        },
        "drain_seconds": round(drain, 1),
        "journey": journey,
        "api_counters": metrics,
        "transactions": {k: int(v) for k, v in xacts.items()},
        "load_average": os.getloadavg()[0],
    }
    total = sum(cpu[k] for k in STACK)
    hits, misses = metrics.get("cache:hit", 0), metrics.get("cache:miss", 0)
    print(
        f"  {scenario:<6} {workers}w: {row['rps']:8.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
        f"p99 {row['p99_ms']:7.1f} ms  errors {sum(errors.values())}  "
        f"cpu {1000 * total / max(served, 1):.2f} ms/req (stack)  "
        f"cache hits {hits}/{hits + misses}  reads {metrics.get('reads:replica', 0)} replica "
        f"/ {metrics.get('reads:primary', 0)} primary  transactions {row['transactions']}  "
        + (f"drain {drain:.1f} s {journey}  " if journey else "")
        + f"load {row['load_average']:.1f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ports = args.ports
    # bench/common.py (seed, fixtures, run) reads the database's place at import.
    os.environ.update(PGHOST=HOST, PGPORT=str(ports["primary"]), BENCH_DB_NAME=DB)
    import fixtures
    import run
    import seed
    from common import BIN, DB_DSN, RESULTS

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"stack: data stack in {stackenv.STACK_DIR}, ports {ports}", flush=True)
    print(stackenv.devstack(ports, "up"), end="", flush=True)
    rows: list[dict[str, Any]] = []
    processes: dict[str, dict[str, int]] = {}
    try:
        if args.tasks:
            seed.TASKS = args.tasks  # type: ignore[attr-defined]  # is_seeded checks it too
        asyncio.run(seed.seed())
        asyncio.run(stackenv.replica_caught_up(ports))
        if args.seed_only:
            return
        wrk = run.ensure_wrk()
        if deleted := asyncio.run(run.delete_created_tasks()):
            print(f"stack: removed {deleted:,} tasks left by an earlier create run")
        asyncio.run(stackenv.reset(DB_DSN))
        shutil.rmtree(stackenv.BROKER_DIR, ignore_errors=True)  # a fresh node, empty queues
        print("stack: starting the RabbitMQ node", flush=True)
        stackenv.broker("start", ports["broker"])
        os.environ.update(stackenv.taskhub_env(ports, args.log_level))
        env = dict(os.environ)
        RESULTS.mkdir(parents=True, exist_ok=True)
        fixture_file = RESULTS / "stack-fixtures.lua"
        data = fixtures.build(fixture_file)
        taskhub, python = str(BIN / "taskhub"), str(BIN / "python")
        background = [
            run.Server(
                "stack-relay", 0, [taskhub, "relay", "--without-dispatcher", "--metrics-port", "0"]
            ),
            run.Server("stack-dispatcher", 0, [taskhub, "dispatcher", "--metrics-port", "0"]),
            run.Server(
                "stack-worker",
                0,
                [
                    taskhub,
                    "worker",
                    "--concurrency",
                    str(args.worker_concurrency),
                    "--metrics-port",
                    "0",
                ],
            ),
            run.Server(
                "stack-mail",
                0,
                [
                    python,
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    f"{HOST}:{ports['mail']}",
                    "-c",
                    "aiosmtpd.handlers.Sink",
                ],
            ),
            run.Server("stack-hook", 0, [python, "bench/sinks.py", "--port", str(ports["hook"])]),
        ]
        try:
            spawn(background, env, RESULTS)
            services = stackenv.service_pids(ports)
            for n, workers in enumerate(args.workers):
                command = [taskhub, "api", "--host", HOST, "--port", str(ports["api"])]
                command += ["--workers", str(workers), "--metrics-port", str(ports["metrics"])]
                api = run.Server(f"stack-api-{workers}w", ports["api"], command)
                with run.running([api], env):
                    warm = stackenv.wait_warm(api.url)
                    print(f"stack: {workers} worker(s) ready and warm after {warm:.1f} s")
                    if n == 0:
                        create_webhooks(api.url, args.webhooks, ports["hook"], DB_DSN)
                        # The dispatcher finds subscribers on the replica.
                        asyncio.run(stackenv.replica_caught_up(ports))
                        check_journey(api.url, data, DB_DSN, args.webhooks, ports["broker"])
                    roots = {"api": pid(api), **services}
                    for server in background:
                        roots[server.name.removeprefix("stack-")] = pid(server)
                    processes[f"{workers}w"] = {k: proctree.count(v) for k, v in roots.items()}
                    print(
                        f"stack: {workers} uvicorn worker(s); processes {processes[f'{workers}w']}"
                    )
                    for scenario in args.scenarios:
                        rows.append(
                            measure(wrk, api, scenario, workers, roots, args, fixture_file, DB_DSN)
                        )
        finally:
            for server in background:
                run.stop(server)
            stackenv.broker("stop", ports["broker"])
            shutil.rmtree(stackenv.BROKER_DIR, ignore_errors=True)
            asyncio.run(run.delete_created_tasks())
            asyncio.run(stackenv.reset(DB_DSN))
    finally:
        if not args.keep_stack:
            stackenv.devstack(ports, "down")
    meta = {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "elapsed_s": round(time.monotonic() - started),
        "command": " ".join(["bench/stack.py", *(argv if argv is not None else sys.argv[1:])]),
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "webhooks": args.webhooks,
        "worker_concurrency": args.worker_concurrency,
        "processes": processes,
    }
    table = render(rows, meta)
    (RESULTS / "stack.md").write_text(table)
    (RESULTS / "stack.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print()
    print(table)
    print(f"stack: written to {RESULTS / 'stack.md'} ({meta['elapsed_s']} s)")


def _ms(seconds: float, count: int) -> str:
    return f"{1000 * seconds / max(count, 1):.2f}"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# The whole stack ({meta['finished']})",
        "",
        f"- {meta['cores']} cores, Python {meta['python']}; load average "
        f"{meta['load_before']:.1f} before, {meta['load_after']:.1f} after",
        f"- wrk {meta['connections']} connections, {meta['warmup']:g} s warm-up then "
        f"{meta['duration']:g} s per scenario; {meta['webhooks']} webhook(s) on every task "
        f"event; Celery pool of {meta['worker_concurrency']}",
        f"- processes per tree: {meta['processes']}",
        f"- command: `{meta['command']}` ({meta['elapsed_s']} s)",
        "",
        "CPU ms per request, by process tree:",
        "",
        "| scenario | workers | req/s | p50 / p99 ms | errors | "
        + " | ".join(STACK)
        + " | **stack total** | "
        + " | ".join(OUTSIDE)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * (len(STACK) + 1 + len(OUTSIDE)),
    ]
    for r in rows:
        cpu, n = r["cpu_seconds"], r["served"]
        total = sum(cpu[k] for k in STACK)
        lines.append(
            f"| {r['scenario']} | {r['workers']} | {r['rps']:,.0f} | "
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {sum(r['errors'].values())} | "
            + " | ".join(_ms(cpu[k], n) for k in STACK)
            + f" | **{_ms(total, n)}** | "
            + " | ".join(_ms(cpu[k], n) for k in OUTSIDE)
            + " |"
        )
    creates = [r for r in rows if r["journey"]]
    if creates:
        lines += [
            "",
            "Per event of the create runs (CPU from the start of the run until every event "
            "is published, dispatched and its jobs done):",
            "",
            "| workers | creates | events | jobs | drained | drain s | "
            + " | ".join(JOURNEY)
            + " | **journey** | rest of the stack |",
            "|---:|---:|---:|---:|---|---:|" + "---:|" * (len(JOURNEY) + 2),
        ]
        for r in creates:
            j, cpu = r["journey"], r["cpu_seconds"]
            journey_cpu = sum(cpu[k] for k in JOURNEY)
            rest = sum(cpu[k] for k in STACK if k not in JOURNEY)
            lines.append(
                f"| {r['workers']} | {j['creates']:,} | {j['events']:,} | {j['jobs']:,} | "
                f"{'yes' if j['drained'] else 'no: ' + str(j['left'])} | "
                f"{r['drain_seconds']:.1f} | "
                + " | ".join(_ms(cpu[k], j["events"]) for k in JOURNEY)
                + f" | **{_ms(journey_cpu, j['events'])}** | {_ms(rest, j['events'])} |"
            )
    lines += [
        "",
        "Checks: cache lookups (API metrics), reads by endpoint (API metrics: reads that "
        "reached a database), transactions on each server (pg_stat_database):",
        "",
        "| scenario | workers | cache hit ratio | hits / misses | reads replica / primary "
        "| transactions replica / primary | rate limited |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, t = r["api_counters"], r["transactions"]
        hits, misses = c.get("cache:hit", 0), c.get("cache:miss", 0)
        ratio = f"{hits / (hits + misses):.1%}" if hits + misses else "-"
        lines.append(
            f"| {r['scenario']} | {r['workers']} | {ratio} | {hits:,} / {misses:,} | "
            f"{c.get('reads:replica', 0):,} / {c.get('reads:primary', 0):,} | "
            f"{t['replica']:,} / {t['primary']:,} | {c.get('ratelimit:limited', 0):,} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
