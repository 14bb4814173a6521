"""The API under uvicorn and under granian, 1 and 2 workers, on bench/run.py's load.

The same settings as bench/run.py's API (cache and rate limits off, principal cache
off, the same pool and a fresh signing key for the run), one server at a time, each
started, warmed up and measured on every scenario with wrk, then stopped. Order per
round: uvicorn-1, granian-1, granian-1-t2 (2 runtime threads), granian-2, uvicorn-2,
reversed in the next round, so each pair of the same worker count runs A,B then B,A
and drift falls on both. CPU per request is the sum over every process of the server
(supervisor and workers, all their threads: the process group it was started in), from
/proc.

    .venv/bin/python bench/servers.py                         # 10 s runs, 2 rounds
    .venv/bin/python bench/servers.py --duration 5 --rounds 1 --configs uvicorn-1,granian-1
    .venv/bin/python bench/servers.py --check                 # what the platform relies on

``uvicorn`` is ``taskhub api`` as it runs today (uvloop, httptools with
kit/server.py's protocol, access log off). ``granian`` runs the same factory on its
ASGI interface with the options that suit this app best: uvloop, HTTP/1 only (no h2
detection), no websockets, its access log off (the app logs requests itself), one
runtime thread per worker (``--granian-threads``). ``--check`` runs bench/serverchecks.py.
Writes ``bench/results/servers.md`` and ``servers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fixtures
import run
import seed
from common import BIN, RESULTS, TASKS, USERS, api_environment
from run import Run, Server, delete_created_tasks, ensure_wrk, measure, run_wrk, running
from taskhub_api.settings import Settings

# server-workers[-tN]: N runtime threads per granian worker (default --granian-threads).
CONFIGS = ("uvicorn-1", "granian-1", "granian-1-t2", "granian-2", "uvicorn-2")
SCENARIOS = ("list", "get", "create")


@dataclass
class GroupServer(Server):
    """A server whose CPU is that of its whole process group: the supervisor and the
    worker processes (``running`` starts each server in a session of its own)."""

    def cpu_seconds(self) -> float:
        assert self.process is not None
        group = self.process.pid
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == group:  # pgrp
                ticks += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return ticks / run.TICKS


def wait_warm(api: Server, workers: int, timeout: float = 60.0) -> None:
    """Until /health/ready answers 200 several times in a row: each worker's pools are
    warm (the API warms them in the background after it starts serving)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 4 * workers:
        if time.monotonic() > deadline:
            sys.exit(f"servers: {api.name} not ready within {timeout:.0f} s; see {api.log}")
        streak = streak + 1 if run._request(api.url + "/health/ready")[0] == 200 else 0
        time.sleep(0.1 if streak else 0.5)


def granian_command(port: int, workers: int, threads: int) -> list[str]:
    return [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--runtime-threads",
        str(threads),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
        "taskhub_api.main:create_app",
    ]


def server(config: str, port: int, args: argparse.Namespace) -> GroupServer:
    name, workers, *threads = config.split("-")
    if name == "uvicorn":
        command = [str(BIN / "taskhub"), "api", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", workers, "--metrics-port", "0"]
    else:
        runtime = int(threads[0].removeprefix("t")) if threads else args.granian_threads
        command = granian_command(port, int(workers), runtime)
    return GroupServer(config, port, command)


def order(round_: int, configs: list[str]) -> list[str]:
    return configs if round_ % 2 else configs[::-1]


def summarise(runs: list[Run], configs: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        for config in configs:
            mine = sorted(
                (r for r in runs if r.scenario == scenario and r.server == config),
                key=lambda r: r.round,
            )
            requests = sum(r.requests for r in mine)
            rounds = [r.rps for r in mine]
            rps = requests / sum(r.seconds for r in mine)
            rows.append(
                {
                    "scenario": scenario,
                    "config": config,
                    "rps": rps,
                    "rounds": rounds,
                    # Between rounds, as a share of the mean: the noise to beat.
                    "spread": (max(rounds) - min(rounds)) / rps if rps else 0.0,
                    "p50": statistics.median(r.p50_ms for r in mine),
                    "p99": max(r.p99_ms for r in mine),
                    "errors": sum(sum(r.errors.values()) for r in mine),
                    "cpu": sum(r.cpu_ms_per_request * r.requests for r in mine) / max(requests, 1),
                    "load": [r.load_average for r in mine],
                }
            )
    return rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# The API under uvicorn and granian ({meta['finished']})",
        "",
        f"- machine: {meta['cores']} cores, Python {meta['python']}; load average "
        f"{meta['load_before']:.1f} before, {meta['load_after']:.1f} after",
        f"- data: {USERS:,} users, {TASKS:,} tasks (`taskhub_bench`); pool "
        f"{meta['pool_size']}+{meta['max_overflow']} per worker",
        f"- load: wrk {meta['connections']} connections, {meta['duration']:g} s per run after "
        f"{meta['warmup']:g} s warm-up per server and scenario, {meta['rounds']} rounds "
        "(order reversed each round)",
        f"- granian {meta['granian']}, uvicorn {meta['uvicorn']}; granian runtime threads "
        f"per worker: {meta['granian_threads']}",
        f"- command: `{meta['command']}`",
        "",
        "| scenario | server | workers | req/s | per round | spread | vs uvicorn | "
        "p50 / p99 ms | errors | CPU ms/req | load avg |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {(r["scenario"], r["config"]): r for r in rows}
    for r in rows:
        name, workers, *threads = r["config"].split("-")
        base = by_key.get((r["scenario"], f"uvicorn-{workers}"))
        name += f" ({threads[0].removeprefix('t')} runtime threads)" if threads else ""
        versus = ""
        if base and name != "uvicorn":
            # Each round's pair ran next to each other: less drift than the totals.
            pairs = [g / u - 1 for g, u in zip(r["rounds"], base["rounds"], strict=True) if u]
            versus = (
                f"{r['rps'] / base['rps'] - 1:+.1%} ("
                + " / ".join(f"{x:+.0%}" for x in pairs)
                + ")"
            )
        per_round = " / ".join(f"{x:,.0f}" for x in r["rounds"])
        load = " / ".join(f"{x:.1f}" for x in r["load"])
        lines.append(
            f"| {r['scenario']} | {name} | {workers} | {r['rps']:,.0f} | {per_round} | "
            f"{r['spread']:.1%} | {versus} | {r['p50']:.1f} / {r['p99']:.1f} | "
            f"{r['errors']} | {r['cpu']:.2f} | {load} |"
        )
    lines += [
        "",
        "req/s: all rounds; spread: (best - worst round) / req/s, the noise between rounds; "
        "vs uvicorn: granian's req/s over uvicorn's with the same workers, all rounds (each "
        "round's pair). p50: median of "
        "the rounds, p99: the worst round. Errors: socket errors, timeouts and responses "
        ">= 400. CPU ms/req: every process of the server (supervisor, workers, threads).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="wrk's")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--granian-threads", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=Settings().db.pool_size)
    parser.add_argument("--max-overflow", type=int, default=Settings().db.max_overflow)
    parser.add_argument("--port", type=int, default=8121)
    parser.add_argument("--check", action="store_true", help="run bench/serverchecks.py")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    args.configs = [c for c in args.configs.split(",") if c]
    if unknown := set(args.configs) - set(CONFIGS):
        parser.error(f"configs: some of {', '.join(CONFIGS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.check:
        import serverchecks

        sys.exit(serverchecks.main(args.port))
    load_before = os.getloadavg()[0]
    wrk = ensure_wrk()
    asyncio.run(seed.seed())
    asyncio.run(delete_created_tasks())
    os.environ.update(api_environment(args.pool_size, args.max_overflow))
    env = dict(os.environ)
    fixture_file = RESULTS / "servers-fixtures.lua"
    fixtures.build(fixture_file)
    runs: list[Run] = []
    try:
        for n in range(1, args.rounds + 1):
            for config in order(n, args.configs):
                api = server(config, args.port, args)
                with running([api], env):
                    wait_warm(api, int(config.split("-")[1]))
                    print(f"servers: round {n}, {config}", flush=True)
                    for scenario in args.scenarios:
                        run_wrk(wrk, api, scenario, args, fixture_file, args.warmup)
                        runs.append(measure(wrk, api, scenario, config, n, args, fixture_file))
    finally:
        asyncio.run(delete_created_tasks())

    import granian
    import uvicorn

    meta = {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "pool_size": args.pool_size,
        "max_overflow": args.max_overflow,
        "connections": args.connections,
        "duration": args.duration,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "granian": granian.__version__,
        "uvicorn": uvicorn.__version__,
        "granian_threads": args.granian_threads,
        "command": " ".join(["bench/servers.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    rows = summarise(runs, args.configs, args.scenarios)
    table = render(rows, meta)
    (RESULTS / "servers.md").write_text(table)
    raw = {"meta": meta, "rows": rows, "runs": [asdict(r) for r in runs]}
    (RESULTS / "servers.json").write_text(json.dumps(raw, indent=2))
    print()
    print(table)


if __name__ == "__main__":
    main()
