"""CPU time of whole process trees, from /proc: a server's worker processes, a
PostgreSQL cluster's backends, a Celery worker's pool.

A tree's CPU is what its live processes used (utime + stime) plus what their reaped
children used (cutime + cstime): a backend or pool process that exits during a
measurement still counts, in its parent, so the difference of two snapshots is the
tree's CPU in between.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks of the process and of its reaped children)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: split after the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # gone meanwhile
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        found[int(entry.name)] = (int(fields[1]), utime + stime + cutime + cstime)
    return found


def snapshot(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named tree (its root process and every descendant);
    one pass over /proc for all of them."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    cpu = {}
    for name, root in roots.items():
        ticks, todo = 0, [root]
        while todo:
            pid = todo.pop()
            if pid in processes:
                ticks += processes[pid][1]
                todo += children.get(pid, [])
        cpu[name] = ticks / TICKS
    return cpu


def count(root: int) -> int:
    """Processes in the tree of ``root``."""
    processes = _processes()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in processes:
            total += 1
            todo += [p for p, (parent, _) in processes.items() if parent == pid]
    return total


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
