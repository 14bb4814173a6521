"""Worker scaling: read each group's queues, decide (scaling.decide), scale
through deployments/scale, and report in status.workers and ScalingActive."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from taskhub_operator import scaling
from taskhub_operator.conditions import SCALING_ACTIVE, Condition, parse_timestamp, timestamp
from taskhub_operator.kube import Kube, KubeError, deployment_path, secret_path
from taskhub_operator.rabbitmq import QueueStatsError, queue_stats
from taskhub_operator.rollout import Event


@dataclass
class GroupReport:
    deployment: str
    replicas: int | None
    desired: int | None
    messages: int | None


@dataclass
class ScalingResult:
    workers: list[dict[str, Any]] = field(default_factory=list)
    condition: Condition | None = None
    events: list[Event] = field(default_factory=list)
    reports: list[GroupReport] = field(default_factory=list)


class CredentialsError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def credentials(kube: Kube, namespace: str, secret: str) -> tuple[str, str]:
    try:
        body = await kube.get(secret_path(namespace, secret))
    except KubeError as exc:
        if exc.not_found:
            raise CredentialsError(
                "CredentialsSecretNotFound", f"Secret {secret} not found"
            ) from exc
        if exc.status == 403:
            raise CredentialsError(
                "CredentialsSecretForbidden", f"Secret {secret}: the operator may not read it"
            ) from exc
        raise
    data = body.get("data") or {}
    try:
        username = base64.b64decode(data["username"]).decode()
        password = base64.b64decode(data["password"]).decode()
    except (KeyError, ValueError) as exc:
        raise CredentialsError(
            "CredentialsInvalid", f"Secret {secret} needs base64 keys 'username' and 'password'"
        ) from exc
    return username, password


async def reconcile(
    kube: Kube,
    http: httpx.AsyncClient,
    *,
    namespace: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    now: datetime,
) -> ScalingResult:
    groups = spec.get("workers") or []
    result = ScalingResult()
    if not groups:
        return result
    previous = {w.get("deployment"): w for w in status.get("workers") or []}
    paused = bool(spec.get("paused"))
    rabbit = spec.get("rabbitmq") or {}
    problems: list[tuple[str, str]] = []
    login: tuple[str, str] | None = None
    try:
        login = await credentials(kube, namespace, rabbit["credentialsSecret"])
    except CredentialsError as exc:
        problems.append((exc.reason, exc.message))

    for group in groups:
        name = group["deployment"]
        entry = dict(previous.get(name) or {"deployment": name})
        result.workers.append(entry)
        try:
            deployment = await kube.get(deployment_path(namespace, name))
        except KubeError as exc:
            if not exc.not_found:
                raise
            problems.append(("DeploymentNotFound", f"Deployment {name} not found"))
            result.reports.append(GroupReport(name, None, None, None))
            continue
        current = int(deployment.get("spec", {}).get("replicas", 1))
        entry["replicas"] = current
        if login is None:
            result.reports.append(GroupReport(name, current, None, None))
            continue
        try:
            stats = await queue_stats(
                http,
                url=rabbit["managementUrl"],
                vhost=rabbit.get("vhost", "/"),
                queues=list(group["queues"]),
                username=login[0],
                password=login[1],
                timeout_seconds=float(rabbit.get("timeoutSeconds", 5)),
            )
        except QueueStatsError as exc:
            problems.append((exc.reason, f"{name}: {exc.message}; holding {current} replicas"))
            result.reports.append(GroupReport(name, current, None, None))
            continue
        policy = scaling.Policy.from_spec(group)
        decision = scaling.decide(
            messages=stats.messages,
            current=current,
            policy=policy,
            history=scaling.history_from_status(entry.get("recommendations")),
            last_scale=parse_timestamp(entry.get("lastScaleTime")),
            now=now,
        )
        entry.update(
            messages=stats.messages,
            consumers=stats.consumers,
            deliverRate=round(stats.deliver_rate, 3),
            desired=decision.desired,
            recommendations=scaling.history_to_status(decision.history),
        )
        result.reports.append(GroupReport(name, current, decision.desired, stats.messages))
        if decision.changes(current) and not paused:
            await kube.merge_patch(
                deployment_path(namespace, name) + "/scale",
                {"spec": {"replicas": decision.desired}},
            )
            entry["replicas"] = decision.desired
            entry["lastScaleTime"] = timestamp(now)
            verb = "ScaledUp" if decision.desired > current else "ScaledDown"
            result.events.append(
                Event(
                    False,
                    verb,
                    f"{name}: {current} → {decision.desired} replicas ({decision.reason}): "
                    f"{stats.messages} messages in {', '.join(group['queues'])}, "
                    f"target {policy.target_per_replica} per replica",
                )
            )
    if problems:
        reason = problems[0][0]
        result.condition = Condition(
            SCALING_ACTIVE, False, reason, "; ".join(message for _, message in problems)
        )
    elif paused:
        result.condition = Condition(
            SCALING_ACTIVE, False, "Paused", "spec.paused is true: desired counts are reported only"
        )
    else:
        summary = ", ".join(f"{r.deployment} {r.replicas}/{r.desired}" for r in result.reports)
        result.condition = Condition(SCALING_ACTIVE, True, "QueueMetricsRead", summary)
    return result
