"""The reconciliation's table, and its checks of the HTTP answers and of the faults."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.faults import Window
from tests.chaos.load import Call
from tests.chaos.supervisor import Exit


@dataclass
class Row:
    check: str
    expected: str
    actual: str
    ok: bool | None  # None: a figure, not a check
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def figure(self, check: str, actual: object, note: str = "") -> None:
        self.rows.append(Row(check, "", str(actual), None, note))

    def check(self, check: str, expected: object, actual: object, ok: bool, why: str = "") -> None:
        self.rows.append(Row(check, str(expected), str(actual), ok, "" if ok else why))
        if not ok:
            self.failures.append(f"{check}: expected {expected}, got {actual}. {why}".strip())

    def table(self) -> str:
        cw = max(len(r.check) for r in self.rows)
        ew = max(8, *(len(r.expected) for r in self.rows))
        aw = max(6, *(len(r.actual) for r in self.rows))
        head = f"{'check':<{cw}}  {'expected':>{ew}}  {'actual':>{aw}}  ok    note"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            mark = "" if r.ok is None else ("ok" if r.ok else "FAIL")
            line = f"{r.check:<{cw}}  {r.expected:>{ew}}  {r.actual:>{aw}}  {mark:<4}  {r.note}"
            lines.append(line.rstrip())
        return "\n".join(lines)


def http_checks(report: Report, calls: list[Call], windows: list[Window]) -> None:
    answers = Counter(str(c.status) if c.status is not None else c.error for c in calls)
    for status, count in sorted(answers.items()):
        report.figure(f"HTTP answers: {status}", count)
    unattributed = [
        c
        for c in calls
        if (c.status is None or c.status >= 500)
        and not c.hung
        and not any(w.covers(c.t_start, c.t_end) for w in windows)
    ]
    report.check(
        "5xx / no answer outside every fault window",
        0,
        len(unattributed),
        not unattributed,
        "; ".join(
            f"{c.method} {c.route} {c.status or c.error} at {c.t_start:.1f}-{c.t_end:.1f}s"
            for c in unattributed[:5]
        ),
    )
    by_fault: Counter[str] = Counter()
    alone: Counter[str] = Counter()  # in windows of this kind only
    for c in calls:
        if (c.status is not None and c.status >= 500) or (c.status is None and not c.hung):
            kinds = {w.fault.kind for w in windows if w.covers(c.t_start, c.t_end)}
            for kind in kinds:
                by_fault[kind] += 1
            during = {w.fault.kind for w in windows if w.during(c.t_start)}
            if len(during) == 1:
                alone[during.pop()] += 1
    for kind, count in sorted(by_fault.items()):
        report.figure(
            f"  5xx / no answer in windows of {kind}",
            count,
            f"{alone[kind]} sent while only this fault was on",
        )
    no_retry_after = [c for c in calls if c.status == 503 and not c.retry_after]
    report.check(
        "503 without Retry-After",
        0,
        len(no_retry_after),
        not no_retry_after,
        "; ".join(f"{c.method} {c.route} at {c.t_start:.1f}s" for c in no_retry_after[:5]),
    )
    hung = [c for c in calls if c.hung]
    report.check(
        "requests that hung past the client timeout",
        0,
        len(hung),
        not hung,
        "; ".join(f"{c.method} {c.route} {c.error} at {c.t_start:.1f}s" for c in hung[:5]),
    )


def fault_checks(
    report: Report, windows: list[Window], exits: list[Exit], planned: list[tuple[str, float]]
) -> None:
    kinds = Counter(w.fault.kind for w in windows if w.error is None)
    report.figure(
        "faults injected",
        sum(kinds.values()),
        ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
    )
    failed = [f"{w.fault.kind} at {w.start:.1f}s: {w.error}" for w in windows if w.error]
    report.check(
        "faults that could not be injected or healed", 0, len(failed), not failed, "; ".join(failed)
    )
    unplanned = []
    for exit in exits:
        ours = any(name == exit.name and abs(at - exit.at) < 3.0 for name, at in planned)
        if not ours:
            unplanned.append(exit)
    report.figure("process exits (kill -9 by the harness)", len(exits) - len(unplanned))
    outside = [e for e in unplanned if not any(w.covers(e.at, e.at) for w in windows)]
    report.figure(
        "process exits of their own (restarted)",
        len(unplanned),
        ", ".join(f"{e.name}={e.returncode}@{e.at:.0f}s" for e in unplanned[:6]),
    )
    report.check(
        "process exits of their own outside fault windows",
        0,
        len(outside),
        not outside,
        "; ".join(f"{e.name} rc={e.returncode} at {e.at:.1f}s" for e in outside),
    )
