"""The worker-scaling decision: a pure function of the queue depth, the current
replica count, the group's settings and the history kept in status.

desired = ceil(messages / targetMessagesPerReplica), clamped to min..max; at or
below the activation threshold, min. Up at once; down only to the highest
recommendation of the stabilization window, by at most 25 % (at least 1) per
step, never within the cooldown of the last change; changes within the
tolerance (10 %) of the current count are ignored. docs/operator.md has a
worked example."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from taskhub_operator.conditions import parse_timestamp, timestamp

SCALE_DOWN_STEP = 0.25


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    target_per_replica: int
    activation: int = 0
    window: timedelta = timedelta(seconds=300)
    cooldown: timedelta = timedelta(seconds=60)
    tolerance: float = 0.1

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Policy:
        return cls(
            min_replicas=int(spec.get("minReplicas", 1)),
            max_replicas=int(spec["maxReplicas"]),
            target_per_replica=int(spec.get("targetMessagesPerReplica", 20)),
            activation=int(spec.get("activationMessages", 0)),
            window=timedelta(seconds=int(spec.get("stabilizationWindowSeconds", 300))),
            cooldown=timedelta(seconds=int(spec.get("cooldownSeconds", 60))),
            tolerance=float(spec.get("tolerance", 0.1)),
        )


@dataclass(frozen=True)
class Recommendation:
    time: datetime
    replicas: int


@dataclass(frozen=True)
class Decision:
    desired: int
    recommended: int
    reason: str
    # Only the recommendations that can still be the window's highest: each is
    # higher than every later one, so the first is the window's maximum.
    history: list[Recommendation] = field(default_factory=list)

    def changes(self, current: int) -> bool:
        return self.desired != current


def recommend(messages: int, policy: Policy) -> int:
    if messages <= policy.activation:
        return policy.min_replicas
    wanted = math.ceil(messages / policy.target_per_replica)
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def remember(
    history: list[Recommendation], new: Recommendation, window: timedelta
) -> list[Recommendation]:
    """Add `new` to a window kept as a decreasing sequence (a monotonic queue)."""
    kept = [r for r in history if new.time - r.time < window and r.replicas > new.replicas]
    return [*kept, new]


def decide(
    *,
    messages: int,
    current: int,
    policy: Policy,
    history: list[Recommendation],
    last_scale: datetime | None,
    now: datetime,
) -> Decision:
    recommended = recommend(messages, policy)
    window = remember(history, Recommendation(now, recommended), policy.window)

    def hold(reason: str) -> Decision:
        return Decision(current, recommended, reason, window)

    if current < policy.min_replicas:
        return Decision(policy.min_replicas, recommended, "BelowMinimum", window)
    if current > policy.max_replicas:
        return Decision(policy.max_replicas, recommended, "AboveMaximum", window)
    if recommended == current:
        return hold("AtRecommendation")
    if current > 0 and abs(recommended - current) <= policy.tolerance * current:
        return hold("WithinTolerance")
    if recommended > current:
        return Decision(recommended, recommended, "ScaleUp", window)
    stabilized = window[0].replicas
    if stabilized >= current:
        return hold("Stabilizing")
    if last_scale is not None and now - last_scale < policy.cooldown:
        return hold("CoolingDown")
    step = max(1, math.floor(current * SCALE_DOWN_STEP))
    return Decision(max(stabilized, current - step), recommended, "ScaleDown", window)


def history_from_status(entries: list[dict[str, Any]] | None) -> list[Recommendation]:
    result = []
    for entry in entries or []:
        moment = parse_timestamp(entry.get("time"))
        if moment is not None:
            result.append(Recommendation(moment, int(entry.get("replicas", 0))))
    return result


def history_to_status(history: list[Recommendation]) -> list[dict[str, Any]]:
    return [{"time": timestamp(r.time), "replicas": r.replicas} for r in history]
