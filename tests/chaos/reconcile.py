"""After the load: wait until the system drained, then compare what the clients were
told, what the database holds and what the receivers got.

Expected effects are computed the way the system defines them (docs/async.md): one
event per committed change (plus ``task.assigned`` when an assignee is set), a welcome
mail per ``user.registered`` and a mail per ``task.assigned`` (Message-ID from the job
key), and a webhook delivery per event and active subscription whose owner may read
it (delivery id = uuid5(webhook, event), as the dispatcher computes it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlparse

import asyncpg

from taskhub_api.notifications.email import message_id
from taskhub_api.notifications.jobs import ASSIGNMENT, WELCOME
from taskhub_api.settings import SmtpSettings
from taskhub_api.webhooks.jobs import DELIVER, delivery_id
from tests.chaos.faults import Window
from tests.chaos.load import Load
from tests.chaos.receivers import MailSink, WebhookReceiver
from tests.chaos.report import Report, fault_checks, http_checks
from tests.chaos.stack import ChaosStack
from tests.chaos.supervisor import Exit


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, statement_cache_size=0, timeout=5)


async def drain(stack: ChaosStack, seconds: float, stall: float = 45.0) -> tuple[bool, str]:
    """Waits until the outbox is published, no ledger row is running or awaiting a
    retry, and every work queue is empty, three polls in a row; (drained, last state).

    Gives up after ``seconds``, or after ``stall`` seconds without progress (no outbox
    row published, no job finished): a backlog that drains slowly is not a failure, one
    that stopped draining is.
    """
    deadline = time.monotonic() + seconds
    calm = 0
    state = "not polled"
    dsn = stack.dsn()
    progress: tuple[int, int] | None = None
    moved = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved < stall:
        try:
            conn = await _connect(dsn)
            try:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                )
                unsettled = await conn.fetchval(
                    "SELECT count(*) FROM job_execution WHERE status IN ('running', 'failed')"
                )
                finished = await conn.fetchval(
                    "SELECT count(*) FROM job_execution WHERE status IN ('done', 'dead')"
                )
            finally:
                await conn.close()
            if progress != (pending, finished):
                progress, moved = (pending, finished), time.monotonic()
            queues = await asyncio.to_thread(stack.queue_details)
            busy = {
                q["name"]: f"{q.get('messages_ready')} ready, "
                f"{q.get('messages_unacknowledged')} unacked, {q.get('consumers')} consumers"
                for q in queues
                if q.get("messages") and not q["name"].endswith(".dlq")
            }
            state = (
                f"outbox pending {pending}, ledger unsettled {unsettled}, finished {finished}, "
                f"queues {busy}"
            )
            calm = calm + 1 if not (pending or unsettled or busy) else 0
        except (OSError, asyncpg.PostgresError, ValueError) as exc:
            state = f"{type(exc).__name__}: {exc}"
            calm = 0
        if calm >= 3:
            return True, state
        await asyncio.sleep(1.0)
    stalled = time.monotonic() - moved >= stall
    return False, f"{'stalled' if stalled else 'out of time'}: {state}"


def _payload(row: asyncpg.Record) -> dict[str, Any]:
    value = row["payload"]
    return json.loads(value) if isinstance(value, str) else dict(value)


async def reconcile(
    stack: ChaosStack,
    load: Load,
    receiver: WebhookReceiver,
    mail: MailSink,
    windows: list[Window],
    exits: list[Exit],
    planned: list[tuple[str, float]],
    drained: tuple[bool, str],
) -> Report:
    report = Report()
    conn = await _connect(stack.dsn())
    try:
        events = await conn.fetch("SELECT id, type, aggregate_id, payload FROM event ORDER BY seq")
        outbox = await conn.fetch("SELECT event_id, published_at FROM outbox")
        tasks = await conn.fetch("SELECT id, title, version, deleted_at FROM task")
        users = await conn.fetch('SELECT id, username, roles FROM "user"')
        hooks = await conn.fetch(
            "SELECT w.id, w.owner_id, w.url, w.events, w.active, u.roles, u.disabled "
            'FROM webhook w JOIN "user" u ON u.id = w.owner_id'
        )
        ledger = await conn.fetch("SELECT key, name, status FROM job_execution")
    finally:
        await conn.close()
    report.check(
        "system drained (outbox, ledger, queues)",
        "yes",
        "yes" if drained[0] else "no",
        drained[0],
        drained[1],
    )
    replica_state, replica_ok = await _replica(stack)
    report.check(
        "replica streaming, caught up, same events",
        "yes",
        "yes" if replica_ok else "no",
        replica_ok,
        replica_state,
    )

    # Changes and events
    payloads = [(e, _payload(e)) for e in events]
    writes_by_kind = Counter(w.kind for w in load.writes)
    states = Counter(f"{w.kind} {w.state}" for w in load.writes)
    for kind in ("register", "create", "patch", "delete"):
        split = "/".join(str(states[f"{kind} {s}"]) for s in ("acked", "unknown", "refused"))
        report.figure(
            f"writes: {kind} (acked/unknown/refused)", f"{writes_by_kind[kind]} ({split})"
        )
    registered = [u for u in users if u["username"] != "admin"]
    committed = sum(int(t["version"]) for t in tasks) + len(registered)
    report.figure("changes committed (task versions + registrations)", committed)
    changes = [e for e, _ in payloads if e["type"] != "task.assigned"]
    report.check(
        "events written (one per change; task.assigned apart)",
        committed,
        len(changes),
        len(changes) == committed,
    )
    published = sum(1 for o in outbox if o["published_at"] is not None)
    report.check(
        "events published (outbox)",
        len(events),
        published,
        published == len(events) and len(outbox) == len(events),
    )

    by_marker: Counter[tuple[str, str]] = Counter()
    updated_assigns: dict[str, bool] = {}
    deleted: Counter[str] = Counter()
    registrations: Counter[str] = Counter()
    for event, payload in payloads:
        kind = event["type"]
        if kind == "user.registered":
            registrations[payload["user"]["username"]] += 1
        elif kind == "task.deleted":
            deleted[str(event["aggregate_id"])] += 1
        else:
            marker = payload["task"]["description"]
            by_marker[(marker, kind)] += 1
            if kind == "task.updated":
                updated_assigns[marker] = (
                    "assignee_id" in payload["changed"]
                    and payload["task"]["assignee_id"] is not None
                )
    titles = Counter(t["title"] for t in tasks)
    task_deleted = {str(t["id"]): t["deleted_at"] is not None for t in tasks}
    usernames = Counter(u["username"] for u in users)
    lost: list[str] = []
    duplicated: list[str] = []
    phantom: list[str] = []  # a refused write that happened anyway
    known_markers: set[str] = set()
    for write in load.writes:
        if write.kind == "create":
            n = by_marker[(write.marker, "task.created")]
            assigned = by_marker[(write.marker, "task.assigned")]
            consistent = titles[write.marker] == n and assigned == (n if write.assignee else 0)
        elif write.kind == "patch":
            n = by_marker[(write.marker, "task.updated")]
            assigned = by_marker[(write.marker, "task.assigned")]
            consistent = assigned == (1 if n == 1 and updated_assigns[write.marker] else 0)
        elif write.kind == "delete":
            n = deleted[write.marker]
            consistent = task_deleted.get(write.marker, False) == (n == 1)
        else:
            n = registrations[write.marker]
            consistent = usernames[write.marker] == n
        known_markers.add(write.marker)
        label = f"{write.kind} {write.marker} {write.statuses}"
        if n > 1 or not consistent:
            duplicated.append(f"{label}: {n} events, rows/events consistent: {consistent}")
        elif write.state == "acked" and n == 0:
            lost.append(label)
        elif write.state == "refused" and n:
            phantom.append(label)
    unknown_done = sum(
        1
        for w in load.writes
        if w.state == "unknown" and _effects(w, by_marker, deleted, registrations)
    )
    report.figure(
        "unknown writes that took effect (once)",
        unknown_done,
        f"of {sum(1 for w in load.writes if w.state == 'unknown')}",
    )
    report.check(
        "acknowledged writes without their event (lost)",
        0,
        len(lost),
        not lost,
        "; ".join(lost[:5]),
    )
    report.check(
        "writes with several events (duplicated)",
        0,
        len(duplicated),
        not duplicated,
        "; ".join(duplicated[:5]),
    )
    report.check(
        "refused (4xx) writes that took effect",
        0,
        len(phantom),
        not phantom,
        "; ".join(phantom[:5]),
    )
    orphans = []
    for event, payload in payloads:
        if event["type"] == "user.registered":
            key = payload["user"]["username"]
        elif event["type"] == "task.deleted":
            key = str(event["aggregate_id"])
        else:
            key = payload["task"]["description"]
        if key not in known_markers:
            orphans.append(f"{event['type']} {event['id']}")
    report.check(
        "events without a change of the load", 0, len(orphans), not orphans, "; ".join(orphans[:5])
    )

    # Webhooks
    expected_deliveries: dict[str, set[str]] = defaultdict(set)
    for hook in hooks:
        path = urlparse(hook["url"]).path
        admin = "admin" in hook["roles"]
        if not hook["active"] or hook["disabled"]:
            continue
        for event, payload in payloads:
            if event["type"] not in hook["events"]:
                continue
            if event["type"] == "user.registered":
                visible = admin
            else:
                task = payload["task"]
                owner = str(hook["owner_id"])
                visible = admin or owner in (str(task["owner_id"]), str(task["assignee_id"]))
            if visible:
                expected_deliveries[path].add(str(delivery_id(hook["id"], event["id"])))
    received: dict[str, set[str]] = defaultdict(set)
    for receipt in receiver.receipts:
        received[receipt.path].add(receipt.delivery_id)
    expected_all = set().union(*expected_deliveries.values()) if expected_deliveries else set()
    received_all = set().union(*received.values()) if received else set()
    missing = sum(len(expected_deliveries[p] - received[p]) for p in expected_deliveries)
    extra = sum(len(received[p] - expected_deliveries.get(p, set())) for p in received)
    report.check(
        "webhook deliveries: distinct X-TaskHub-Delivery received",
        len(expected_all),
        len(received_all),
        missing == 0 and extra == 0,
        f"{missing} missing, {extra} unexpected",
    )
    report.figure(
        "webhook receipts (raw, redeliveries included)",
        len(receiver.receipts),
        f"{len(receiver.receipts) - len(received_all)} redelivered",
    )
    bad = sum(1 for r in receiver.receipts if not r.signature_ok)
    report.check("webhook receipts with a bad signature", 0, bad, bad == 0)

    # Mail
    sender = SmtpSettings().from_address
    expected_mail = {
        message_id(f"{WELCOME if e['type'] == 'user.registered' else ASSIGNMENT}:{e['id']}", sender)
        for e, _ in payloads
        if e["type"] in ("user.registered", "task.assigned")
    }
    got_mail = {m.message_id for m in mail.messages}
    report.check(
        "emails: distinct Message-ID received",
        len(expected_mail),
        len(got_mail),
        got_mail == expected_mail,
        f"{len(expected_mail - got_mail)} missing, {len(got_mail - expected_mail)} unexpected",
    )
    report.figure(
        "emails received (raw, resends included)",
        len(mail.messages),
        f"{len(mail.messages) - len(got_mail)} resent",
    )

    # Ledger and DLQs
    expected_jobs = {
        f"{WELCOME if e['type'] == 'user.registered' else ASSIGNMENT}:{e['id']}"
        for e, _ in payloads
        if e["type"] in ("user.registered", "task.assigned")
    } | {f"{DELIVER}:{d}" for d in expected_all}
    rows = {r["key"]: r for r in ledger if not r["name"].startswith("maintenance.")}
    for (name, status), count in sorted(Counter((r["name"], r["status"]) for r in ledger).items()):
        report.figure(f"ledger: {name} {status}", count)
    not_done = [k for k, r in rows.items() if r["status"] != "done"]
    report.check(
        "ledger rows of the expected jobs, all done",
        len(expected_jobs),
        sum(1 for k in expected_jobs if k in rows and rows[k]["status"] == "done"),
        set(rows) == expected_jobs and not not_done,
        f"missing {len(expected_jobs - set(rows))}, unexpected "
        f"{len(set(rows) - expected_jobs)}, not done {not_done[:5]}",
    )
    try:
        queues = await asyncio.to_thread(stack.queues)
        dlq = {q: n for q, n in queues.items() if q.endswith(".dlq")}
        report.check(
            "dead letters (all DLQs)",
            0,
            sum(dlq.values()),
            not any(dlq.values()),
            str({q: n for q, n in dlq.items() if n}),
        )
    except OSError as exc:
        report.check("dead letters (all DLQs)", 0, f"unreadable: {exc}", False)

    http_checks(report, load.calls, windows)
    fault_checks(report, windows, exits, planned)
    return report


async def _replica(stack: ChaosStack) -> tuple[str, bool]:
    """After the faults the replica streams again and serves what the primary has
    (through PgBouncer, as the API reads it)."""
    dsn = stack.dsn()
    deadline = time.monotonic() + 30
    state = "not polled"
    while time.monotonic() < deadline:
        try:
            primary = await _connect(dsn)
            replica = await _connect(dsn.rsplit("/", 1)[0] + "/taskhub_ro")
            try:
                streaming = await primary.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                    "AND replay_lsn >= pg_current_wal_lsn()"
                )
                ours = await primary.fetchval("SELECT count(*) FROM event")
                theirs = await replica.fetchval("SELECT count(*) FROM event")
            finally:
                await primary.close()
                await replica.close()
            state = f"streaming+caught up {streaming}, events {ours} vs {theirs}"
            if streaming and ours == theirs:
                return "yes", True
        except (OSError, asyncpg.PostgresError) as exc:
            state = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(1.0)
    return state, False


def _effects(
    write: Any, by_marker: Counter[tuple[str, str]], deleted: Counter[str], regs: Counter[str]
) -> int:
    if write.kind == "create":
        return by_marker[(write.marker, "task.created")]
    if write.kind == "patch":
        return by_marker[(write.marker, "task.updated")]
    if write.kind == "delete":
        return deleted[write.marker]
    return regs[write.marker]
