"""One reconciliation pass of a TaskHub: the rollout, then the workers' scale;
the status patch and the Events that say what was done."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf

from taskhub_operator import metrics, workers
from taskhub_operator.conditions import READY, Condition, merge
from taskhub_operator.kube import Kube, KubeError
from taskhub_operator.rollout import Event, Rollout


def _post(body: kopf.Body, events: list[Event]) -> None:
    # kopf.event, not kopf.info: posting.level keeps kopf's own INFO lines (a
    # timer's every pass) out of the Events, and kopf.info obeys it too.
    for event in events:
        kind = "Warning" if event.warning else "Normal"
        kopf.event(body, type=kind, reason=event.reason, message=event.message)


async def run(
    body: kopf.Body,
    patch: kopf.Patch,
    kube: Kube,
    http: httpx.AsyncClient,
    errors: dict[tuple[str, str], str],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    name, namespace = body.metadata.name, body.metadata.namespace
    if name is None or namespace is None:
        raise kopf.PermanentError("a TaskHub is namespaced and named")
    spec: dict[str, Any] = dict(body.spec)
    status: dict[str, Any] = dict(body.status)
    generation = body.metadata.get("generation")
    now = datetime.now(UTC)
    key = (namespace, name)
    try:
        rollout = await Rollout(
            kube, name=name, namespace=namespace, spec=spec, status=status, owner=body, now=now
        ).run()
        scaled = await workers.reconcile(
            kube, http, namespace=namespace, spec=spec, status=status, now=now
        )
    except KubeError as exc:
        # An API error we did not expect (forbidden, conflict, unreachable): hold,
        # say so once per distinct error, and try again at the next interval.
        metrics.RECONCILES.labels(namespace, name, "error").inc()
        message = f"Kubernetes API: {exc}"
        if errors.get(key) != message:
            errors[key] = message
            kopf.event(body, type="Warning", reason="ReconcileError", message=message)
        logger.warning("reconcile of %s/%s failed: %s", namespace, name, message)
        patch.status["conditions"] = merge(
            status.get("conditions"),
            [Condition(READY, False, "ReconcileError", message)],
            generation=generation,
            now=now,
        )
        return
    errors.pop(key, None)
    updates = list(rollout.conditions)
    if scaled.condition is not None:
        updates.append(scaled.condition)
    wanted: dict[str, Any] = dict(rollout.status)
    if scaled.workers:
        wanted["workers"] = scaled.workers
        wanted["workerReplicas"] = sum(int(w.get("replicas") or 0) for w in scaled.workers)
    wanted["conditions"] = merge(status.get("conditions"), updates, generation=generation, now=now)
    wanted["observedGeneration"] = generation
    for field, value in wanted.items():
        if status.get(field) != value:  # a pass that changed nothing writes nothing
            patch.status[field] = value
    _post(body, rollout.events + scaled.events)
    for phase, seconds in rollout.migration_seconds.items():
        metrics.MIGRATION_SECONDS.labels(namespace, name, phase).observe(seconds)
    for report in scaled.reports:
        metrics.report_group(
            namespace,
            name,
            report.deployment,
            replicas=report.replicas,
            desired=report.desired,
            messages=report.messages,
        )
    metrics.RECONCILES.labels(namespace, name, "ok").inc()


def forget(namespace: str, name: str) -> None:
    metrics.forget_taskhub(namespace, name)
