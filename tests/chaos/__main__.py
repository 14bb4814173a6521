"""``python -m tests.chaos [--seconds N] [--seed S]``: start the stack and the processes,
drive the load while injecting the seed's faults, drain, reconcile, print the table.
Exit status 1 on any lost or duplicated effect, unattributed 5xx, 503 without
Retry-After or hung request (docs/reliability.md)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

from tests.chaos.faults import GRACE, Fault, Injector, schedule
from tests.chaos.load import Load
from tests.chaos.receivers import MailSink, WebhookReceiver
from tests.chaos.reconcile import drain, reconcile
from tests.chaos.report import Report
from tests.chaos.stack import ADMIN_USERNAME, HOST, REPLICA_PORT, ROOT, ChaosStack
from tests.chaos.supervisor import Supervisor


def _supervisor(stack: ChaosStack, logs: Path) -> Supervisor:
    supervisor = Supervisor(stack.process_env(), logs, time.monotonic())
    # The Procfile's processes, with the dispatcher apart from the relay so that each
    # can be killed on its own, and no metrics ports (several runs may coexist).
    supervisor.add(
        "api",
        ["api", f"--host={HOST}", f"--port={stack.api_port}", "--metrics-port=0"],
        "Application startup complete",
    )
    supervisor.add("worker", ["worker", "--concurrency=2", "--metrics-port=0"], " ready.")
    supervisor.add("relay", ["relay", "--without-dispatcher", "--metrics-port=0"], "relay started")
    supervisor.add("dispatcher", ["dispatcher", "--metrics-port=0"], "dispatcher started")
    supervisor.add(
        "beat",
        ["beat", f"--schedule-file={logs / 'celerybeat-schedule'}", "--metrics-port=0"],
        "beat: Starting",
    )
    return supervisor


def _dump(logs: Path, load: Load, injector: Injector) -> None:
    """Every request and fault window, for the evidence behind the table."""
    with (logs / "requests.jsonl").open("w") as out:
        for call in load.calls:
            out.write(json.dumps(dataclasses.asdict(call)) + "\n")
    windows = [
        {
            **dataclasses.asdict(w.fault),
            "start": w.start,
            "end": w.end,
            "detail": w.detail,
            "error": w.error,
        }
        for w in sorted(injector.windows, key=lambda w: w.start)
    ]
    (logs / "faults.json").write_text(json.dumps(windows, indent=1))


async def _drive(
    stack: ChaosStack,
    supervisor: Supervisor,
    receiver: WebhookReceiver,
    mail: MailSink,
    faults: list[Fault],
    seconds: float,
    seed: int,
    drain_seconds: float,
    users: int,
) -> Report:
    replica_dsn = f"postgresql://postgres@{HOST}:{REPLICA_PORT}/taskhub"
    load = Load(stack.api_url, supervisor.now, receiver, replica_dsn, seed, users=users)
    injector = Injector(stack, supervisor, seed)
    try:
        await load.setup(ADMIN_USERNAME, stack.admin_password)
        stop = asyncio.Event()
        load_t0 = supervisor.now()
        print(f"load started at {load_t0:.1f}s (run clock)", flush=True)
        running = asyncio.create_task(load.run(stop))
        injecting = asyncio.create_task(injector.run(faults, load_t0))
        await asyncio.sleep(seconds)
        # The last fault heals (and its grace passes) under load too.
        await injecting
        if injector.windows:
            healed = max(w.end or 0.0 for w in injector.windows)
            await asyncio.sleep(max(0.0, GRACE - (supervisor.now() - healed)))
        stop.set()
        await running
        print(f"load stopped at {supervisor.now():.1f}s; {len(load.calls)} requests", flush=True)
        for window in sorted(injector.windows, key=lambda w: w.start):
            print(
                f"  fault {window.fault.kind:<18} {window.start:6.1f}s - "
                f"{(window.end or 0.0):6.1f}s  {window.error or window.detail}"
            )
        not_ready = await asyncio.to_thread(supervisor.wait_ready, None, 90)
        if not_ready:
            print(f"not serving after the load: {not_ready}", flush=True)
        _dump(supervisor.logs, load, injector)
        drained = await drain(stack, drain_seconds)
        print(f"drained: {drained[0]} ({drained[1]}) at {supervisor.now():.1f}s", flush=True)
        return await reconcile(
            stack,
            load,
            receiver,
            mail,
            injector.windows,
            supervisor.exits,
            supervisor.killed,
            drained,
        )
    finally:
        await load.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", 300))
    )
    seed_env = os.environ.get("CHAOS_SEED") or None
    parser.add_argument("--seed", type=int, default=int(seed_env) if seed_env else None)
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=600.0,
        help="bound of the wait for the backlog (it fails sooner if nothing moves for 45 s)",
    )
    parser.add_argument("--users", type=int, default=4)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"CHAOS_SEED={seed} CHAOS_SECONDS={args.seconds:g}", flush=True)
    faults = schedule(seed, args.seconds)
    print(f"schedule ({len(faults)} faults):", flush=True)
    for fault in faults:
        print(f"  at {fault.at:5.1f}s  {fault.kind:<18} duration {fault.duration:.1f}s")

    logs = ROOT / ".local" / "chaos-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    logs.mkdir(parents=True, exist_ok=True)
    mail = MailSink()
    receiver = WebhookReceiver()
    stack = ChaosStack(smtp_port=mail.port)
    mail.start()
    receiver.start()
    supervisor: Supervisor | None = None
    try:
        started = time.monotonic()
        stack.up()
        supervisor = _supervisor(stack, logs)
        supervisor.start()
        not_ready = supervisor.wait_ready(timeout=120)
        if not_ready:
            print(f"processes did not start: {not_ready}; logs in {logs}", file=sys.stderr)
            return 2
        print(f"stack and processes ready in {time.monotonic() - started:.0f}s", flush=True)
        report = asyncio.run(
            _drive(
                stack,
                supervisor,
                receiver,
                mail,
                faults,
                args.seconds,
                seed,
                args.drain_seconds,
                args.users,
            )
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
        receiver.stop()
        mail.stop()
        stack.down()
    with (logs / "receipts.jsonl").open("w") as out:
        for receipt in receiver.receipts:
            out.write(json.dumps(dataclasses.asdict(receipt)) + "\n")
    with (logs / "mails.jsonl").open("w") as out:
        for message in mail.messages:
            out.write(json.dumps(dataclasses.asdict(message)) + "\n")
    table = f"reconciliation (CHAOS_SEED={seed} CHAOS_SECONDS={args.seconds:g}):\n"
    table += report.table() + "\n"
    (logs / "reconciliation.txt").write_text(table + "".join(f"- {f}\n" for f in report.failures))
    print(f"\n{table}\nprocess logs: {logs}")
    if report.failures:
        print(f"\n{len(report.failures)} failure(s):")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print("\nno lost or duplicated effect")
    return 0


if __name__ == "__main__":
    sys.exit(main())
