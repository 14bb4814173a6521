"""Pure builders of the migration Jobs and the reading of their outcome."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from taskhub_operator.conditions import parse_timestamp

COMPONENT_LABEL = "app.kubernetes.io/component"
IMAGE_HASH_LABEL = "taskhub.io/image-hash"
PHASE_LABEL = "taskhub.io/migration-phase"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
Phase = Literal["expand", "contract"]
# The container that runs `taskhub migrate`; every container of the template
# (a bootstrap-admin one after it, say) runs the same image.
MIGRATE_CONTAINER = "migrate"
# The Job name stays under 63 characters (its pods' job-name label) with a
# 10-character hash, whatever the TaskHub's name.
_MAX_PREFIX = 63 - len("-contract-") - 10


def image_hash(image: str) -> str:
    return hashlib.sha256(image.encode()).hexdigest()[:10]


def job_name(taskhub: str, image: str, phase: Phase) -> str:
    """Named from the image: a retry or a restarted operator finds the same Job."""
    kind = "migrate" if phase == "expand" else "contract"
    return f"{taskhub[:_MAX_PREFIX].rstrip('-')}-{kind}-{image_hash(image)}"


def migration_job(
    *, taskhub: str, namespace: str, spec: dict[str, Any], phase: Phase
) -> dict[str, Any]:
    """The Job that runs `taskhub migrate --phase <phase>` on spec.image, with the
    pod template of spec.migrations.template (database settings, service
    account, security context): its container (or initContainer) named
    `migrate` runs the command."""
    image = spec["image"]
    migrations = spec.get("migrations") or {}
    template = copy.deepcopy(migrations.get("template") or {})
    metadata = template.setdefault("metadata", {})
    # The template's name and instance labels stay (NetworkPolicies select the
    # migration pods by them); the operator's own labels are always set.
    labels = {
        "app.kubernetes.io/name": "taskhub",
        "app.kubernetes.io/instance": taskhub,
        **(metadata.get("labels") or {}),
        COMPONENT_LABEL: "migrate",
        MANAGED_BY_LABEL: "taskhub-operator",
        IMAGE_HASH_LABEL: image_hash(image),
        PHASE_LABEL: phase,
    }
    metadata["labels"] = labels
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    pod.setdefault("containers", [])
    everything = [*(pod.get("initContainers") or []), *pod["containers"]]
    migrate = next((c for c in everything if c.get("name") == MIGRATE_CONTAINER), None)
    if migrate is None:
        migrate = {"name": MIGRATE_CONTAINER}
        pod["containers"].insert(0, migrate)
        everything.append(migrate)
    for container in everything:
        container["image"] = image
    # The image's entrypoint (`taskhub`) runs these, unless the template names a command.
    migrate["args"] = ["migrate", "--phase", phase]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(taskhub, image, phase),
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"taskhub.io/image": image},
        },
        "spec": {
            "backoffLimit": int(migrations.get("backoffLimit", 2)),
            "activeDeadlineSeconds": int(migrations.get("activeDeadlineSeconds", 600)),
            "ttlSecondsAfterFinished": int(migrations.get("ttlSecondsAfterFinished", 86400)),
            "template": template,
        },
    }


@dataclass(frozen=True)
class Outcome:
    state: Literal["running", "succeeded", "failed"]
    message: str = ""
    seconds: float | None = None


def outcome(job: dict[str, Any]) -> Outcome:
    """A Job's outcome from its conditions (Complete / Failed), as the Job
    controller reports it."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            started = parse_timestamp(status.get("startTime"))
            finished = parse_timestamp(status.get("completionTime"))
            seconds = (finished - started).total_seconds() if started and finished else None
            return Outcome("succeeded", seconds=seconds)
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            detail = condition.get("message") or ""
            return Outcome("failed", f"{reason}: {detail}".rstrip(": "))
    attempts = int(status.get("failed") or 0)
    active = int(status.get("active") or 0)
    return Outcome("running", f"{active} running, {attempts} failed attempt(s)")
