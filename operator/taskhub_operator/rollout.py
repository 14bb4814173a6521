"""The rollout state machine: every step idempotent, its state in status.rollout.

    (spec.image == status.currentImage, phase Complete)  nothing to do
    Migrating   the expand Job for spec.image runs; the Deployments keep the old image
    RollingOut  the Job succeeded; each managed Deployment is patched and rolls out
    Contracting all Deployments run spec.image; the contract Job runs
    Complete    done;  Failed: a Job failed or a rollout exceeded its deadline

A new spec.image starts over from Migrating whatever the phase; a Job of the
superseded image is left to finish (`taskhub migrate` holds an advisory lock, so
the new Job waits for it, and killing a migration mid-statement could leave
non-transactional DDL half done)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from taskhub_operator import jobs
from taskhub_operator.conditions import MIGRATED, READY, ROLLED_OUT, Condition, timestamp
from taskhub_operator.kube import Kube, KubeError, deployment_path, job_path

MIGRATING, ROLLING_OUT, CONTRACTING, COMPLETE, FAILED = (
    "Migrating",
    "RollingOut",
    "Contracting",
    "Complete",
    "Failed",
)


@dataclass(frozen=True)
class Event:
    warning: bool
    reason: str
    message: str


@dataclass
class Result:
    """What one pass decided: status fields to patch, conditions, events."""

    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    migration_seconds: dict[str, float] = field(default_factory=dict)

    def info(self, reason: str, message: str) -> None:
        self.events.append(Event(False, reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event(True, reason, message))


def managed_deployments(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.deployments, then the worker Deployments (they run the image too)."""
    entries = [dict(d) for d in spec.get("deployments") or []]
    names = {d["name"] for d in entries}
    for group in spec.get("workers") or []:
        if group["deployment"] not in names:
            names.add(group["deployment"])
            entries.append({"name": group["deployment"]})
    return entries


def _containers(deployment: dict[str, Any], only: list[str] | None) -> list[tuple[int, str]]:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    return [
        (index, c["name"])
        for index, c in enumerate(containers or [])
        if only is None or c["name"] in only
    ]


def image_patch(deployment: dict[str, Any], image: str, only: list[str] | None) -> list[Any]:
    """A JSON patch setting the image of the managed containers, guarded by their
    names (a reordered template fails the `test`, it is never mis-patched)."""
    ops: list[dict[str, Any]] = []
    base = "/spec/template/spec/containers"
    for index, name in _containers(deployment, only):
        ops.append({"op": "test", "path": f"{base}/{index}/name", "value": name})
        ops.append({"op": "add", "path": f"{base}/{index}/image", "value": image})
    return ops


def runs_image(deployment: dict[str, Any], image: str, only: list[str] | None) -> bool:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    chosen = [c for c in containers or [] if only is None or c["name"] in only]
    return bool(chosen) and all(c.get("image") == image for c in chosen)


@dataclass(frozen=True)
class Progress:
    state: str  # "done", "progressing", "failed"
    message: str


def progress(deployment: dict[str, Any]) -> Progress:
    """Rolled out: updatedReplicas == availableReplicas == replicas at the new
    generation; a progress deadline exceeded is a failure."""
    meta, spec = deployment.get("metadata", {}), deployment.get("spec", {})
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Progress("failed", f"{name}: {condition.get('message') or 'deadline exceeded'}")
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return Progress("progressing", f"{name}: waiting for the controller to see the change")
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if updated == available == total == want:
        return Progress("done", f"{name}: {available}/{want} available")
    return Progress(
        "progressing",
        f"{name}: {updated} updated, {available} available, {total} total of {want}",
    )


def available(deployment: dict[str, Any]) -> bool:
    want = int(deployment.get("spec", {}).get("replicas", 1))
    have = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    return have >= want


class Rollout:
    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        namespace: str,
        spec: dict[str, Any],
        status: dict[str, Any],
        owner: kopf.Body,
        now: datetime,
    ) -> None:
        self.kube = kube
        self.owner = owner
        self.name = name
        self.namespace = namespace
        self.spec = spec
        self.status = status
        self.now = now
        self.result = Result()
        self._fetched: tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]] | None = None
        # Re-checking a rollout that failed on its deadline: the Warning was posted then.
        self._recovering = False

    async def run(self) -> Result:
        image = self.spec["image"]
        state = dict(self.status.get("rollout") or {})
        current = self.status.get("currentImage")
        if state.get("image") != image and not (current == image and not state):
            if self.spec.get("paused"):
                self.result.conditions.append(
                    Condition(ROLLED_OUT, False, "Paused", f"{image} waits: spec.paused is true")
                )
                return await self._ready(current)
            if state.get("phase") in (MIGRATING, ROLLING_OUT, CONTRACTING):
                self.result.info(
                    "RolloutSuperseded",
                    f"{state.get('image')} superseded by {image} during {state['phase']}",
                )
            state = {"image": image, "phase": MIGRATING, "startedAt": timestamp(self.now)}
            self.result.info("RolloutStarted", f"rolling out {image} (from {current or 'none'})")
        elif self.spec.get("paused"):
            return await self._ready(current)

        migrations = self.spec.get("migrations") or {}
        enabled = migrations.get("enabled", True)
        phase = state.get("phase", COMPLETE)
        if phase == FAILED and state.get("failedPhase") == ROLLING_OUT:
            # Level-triggered: Deployments that made it after all carry on.
            phase, self._recovering = ROLLING_OUT, True
        if phase == MIGRATING:
            phase = await self._migrate(state, "expand") if enabled else ROLLING_OUT
            if not enabled:
                self.result.conditions.append(
                    Condition(
                        MIGRATED, True, "MigrationsDisabled", "spec.migrations.enabled is false"
                    )
                )
        if phase == ROLLING_OUT:
            phase = await self._roll_out(state, image)
            if phase != ROLLING_OUT and phase != FAILED:
                current = image
                self.result.status["currentImage"] = image
                phase = CONTRACTING if enabled else COMPLETE
        if phase == CONTRACTING:
            phase = await self._migrate(state, "contract")
        if phase == COMPLETE:
            await self._correct_drift(image)
        if phase == FAILED:
            phase = await self._retry_if_job_deleted(state)
        state["phase"] = phase
        if phase in (COMPLETE, FAILED) and "finishedAt" not in state:
            state["finishedAt"] = timestamp(self.now)
        self.result.status["rollout"] = state
        return await self._ready(current)

    async def _migrate(self, state: dict[str, Any], phase: jobs.Phase) -> str:
        image = self.spec["image"]
        manifest = jobs.migration_job(
            taskhub=self.name, namespace=self.namespace, spec=self.spec, phase=phase
        )
        name = manifest["metadata"]["name"]
        state["job"] = name
        label = "migration" if phase == "expand" else "contract migration"
        try:
            job = await self.kube.get(job_path(self.namespace, name))
        except KubeError as exc:
            if not exc.not_found:
                raise
            job = await self._create_job(manifest)
        outcome = jobs.outcome(job)
        if outcome.state == "running":
            reason = "MigrationRunning" if phase == "expand" else "ContractRunning"
            self.result.conditions.append(
                Condition(MIGRATED, phase == "contract", reason, f"Job {name}: {outcome.message}")
            )
            if phase == "expand":
                self.result.conditions.append(
                    Condition(
                        ROLLED_OUT, False, "WaitingForMigration", f"{image} waits for Job {name}"
                    )
                )
            return MIGRATING if phase == "expand" else CONTRACTING
        if outcome.state == "failed":
            reason = "MigrationFailed" if phase == "expand" else "ContractFailed"
            message = f"Job {name} ({label} of {image}) failed: {outcome.message}"
            self.result.conditions.append(Condition(MIGRATED, False, reason, message))
            if phase == "expand":
                self.result.conditions.append(
                    Condition(
                        ROLLED_OUT, False, reason, f"{image} not rolled out; the old version serves"
                    )
                )
            self.result.warn(reason, message)
            state["message"] = message
            state["failedPhase"] = MIGRATING if phase == "expand" else CONTRACTING
            return FAILED
        if outcome.seconds is not None:
            self.result.migration_seconds[phase] = outcome.seconds
        if phase == "expand":
            self.result.conditions.append(
                Condition(MIGRATED, True, "MigrationSucceeded", f"Job {name} migrated for {image}")
            )
            self.result.info("MigrationSucceeded", f"Job {name} succeeded; rolling out {image}")
            return ROLLING_OUT
        self.result.conditions.append(
            Condition(
                MIGRATED, True, "ContractSucceeded", f"schema at head for {image} (Job {name})"
            )
        )
        self.result.info("RolloutComplete", f"{image} rolled out and its contract phase applied")
        return COMPLETE

    async def _create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        # Owned by the TaskHub: deleting it deletes its Jobs (and their pods).
        kopf.append_owner_reference(manifest, owner=self.owner)
        try:
            created = await self.kube.create(job_path(self.namespace), manifest)
        except KubeError as exc:
            if not exc.conflict:
                raise
            return await self.kube.get(job_path(self.namespace, manifest["metadata"]["name"]))
        self.result.info("MigrationStarted", f"created Job {manifest['metadata']['name']}")
        return created

    async def _deployments(self) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
        """The managed Deployments as read once per pass (again after a patch)."""
        if self._fetched is not None:
            return self._fetched
        found, missing = [], []
        for entry in managed_deployments(self.spec):
            try:
                found.append(
                    (entry, await self.kube.get(deployment_path(self.namespace, entry["name"])))
                )
            except KubeError as exc:
                if not exc.not_found:
                    raise
                missing.append(entry["name"])
        self._fetched = (found, missing)
        return self._fetched

    async def _set_image(self, name: str, patch: list[Any]) -> None:
        await self.kube.json_patch(deployment_path(self.namespace, name), patch)
        self._fetched = None

    async def _roll_out(self, state: dict[str, Any], image: str) -> str:
        deployments, missing = await self._deployments()
        if missing:
            message = f"Deployment(s) not found: {', '.join(missing)}"
            self.result.conditions.append(
                Condition(ROLLED_OUT, False, "DeploymentNotFound", message)
            )
            state["message"] = message
            return ROLLING_OUT
        waiting: list[str] = []
        for entry, deployment in deployments:
            only = entry.get("containers")
            if not runs_image(deployment, image, only):
                patch = image_patch(deployment, image, only)
                if not patch:
                    message = f"Deployment {entry['name']} has no container to set the image of"
                    self.result.conditions.append(
                        Condition(ROLLED_OUT, False, "NoContainer", message)
                    )
                    return ROLLING_OUT
                await self._set_image(entry["name"], patch)
                self.result.info("ImageUpdated", f"Deployment {entry['name']} → {image}")
                waiting.append(f"{entry['name']}: image set")
                continue
            step = progress(deployment)
            if step.state == "failed":
                message = f"{image} did not roll out: {step.message}"
                self.result.conditions.append(
                    Condition(ROLLED_OUT, False, "ProgressDeadlineExceeded", message)
                )
                if not self._recovering:
                    self.result.warn("RolloutFailed", message)
                state["message"] = message
                state["failedPhase"] = ROLLING_OUT
                return FAILED
            if step.state != "done":
                waiting.append(step.message)
        if waiting:
            self.result.conditions.append(
                Condition(ROLLED_OUT, False, "RollingOut", "; ".join(waiting))
            )
            return ROLLING_OUT
        self.result.conditions.append(
            Condition(ROLLED_OUT, True, "RolledOut", f"every managed Deployment runs {image}")
        )
        for key in ("message", "failedPhase", "finishedAt"):
            state.pop(key, None)
        return COMPLETE

    async def _correct_drift(self, image: str) -> None:
        """Level-triggered: a Deployment set to another image by hand (or added to
        the spec later) is set back to the migrated image."""
        deployments, missing = await self._deployments()
        if missing:
            message = f"Deployment(s) not found: {', '.join(missing)}"
            self.result.conditions.append(
                Condition(ROLLED_OUT, False, "DeploymentNotFound", message)
            )
            return
        for entry, deployment in deployments:
            only = entry.get("containers")
            if not runs_image(deployment, image, only):
                patch = image_patch(deployment, image, only)
                if patch:
                    await self._set_image(entry["name"], patch)
                    self.result.warn(
                        "ImageDriftCorrected", f"Deployment {entry['name']} set back to {image}"
                    )
        self.result.conditions.append(
            Condition(ROLLED_OUT, True, "RolledOut", f"every managed Deployment runs {image}")
        )

    async def _retry_if_job_deleted(self, state: dict[str, Any]) -> str:
        """A failed migration is retried for the same image when its Job is deleted."""
        failed = state.get("failedPhase")
        job = state.get("job")
        if failed not in (MIGRATING, CONTRACTING) or not job:
            return FAILED
        try:
            await self.kube.get(job_path(self.namespace, job))
        except KubeError as exc:
            if not exc.not_found:
                raise
            self.result.info("MigrationRetried", f"Job {job} was deleted; running it again")
            state.pop("failedPhase", None)
            state.pop("message", None)
            state.pop("finishedAt", None)
            return str(failed)
        return FAILED

    async def _ready(self, current: str | None) -> Result:
        """Ready: every managed Deployment is available (whatever image it serves)."""
        deployments, missing = await self._deployments()
        if missing:
            self.result.conditions.append(
                Condition(READY, False, "DeploymentNotFound", f"not found: {', '.join(missing)}")
            )
        else:
            short = [d["metadata"]["name"] for _, d in deployments if not available(d)]
            if short:
                self.result.conditions.append(
                    Condition(
                        READY, False, "DeploymentUnavailable", f"not available: {', '.join(short)}"
                    )
                )
            else:
                self.result.conditions.append(
                    Condition(READY, True, "Available", f"serving {current or 'no image yet'}")
                )
        return self.result
