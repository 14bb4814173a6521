"""Status conditions in the standard Kubernetes shape (metav1.Condition)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MIGRATED = "Migrated"
ROLLED_OUT = "RolledOut"
READY = "Ready"
SCALING_ACTIVE = "ScalingActive"
TYPES = (MIGRATED, ROLLED_OUT, READY, SCALING_ACTIVE)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def merge(
    existing: list[dict[str, Any]] | None,
    updates: list[Condition],
    *,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions after `updates`, in TYPES order.

    lastTransitionTime changes only when a condition's status flips; a condition
    not in `updates` keeps its last value."""
    by_type = {c["type"]: dict(c) for c in existing or [] if "type" in c}
    for update in updates:
        status = "True" if update.status else "False"
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != status
        transition = timestamp(now)
        if previous is not None and not changed:
            transition = previous.get("lastTransitionTime") or transition
        entry: dict[str, Any] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[update.type] = entry
    ordered = [by_type.pop(kind) for kind in TYPES if kind in by_type]
    return ordered + sorted(by_type.values(), key=lambda c: str(c["type"]))


def find(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)
