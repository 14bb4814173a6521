"""Pure builders: migration Jobs, conditions, image patches, rollout progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch

from taskhub_operator.conditions import Condition, merge
from taskhub_operator.jobs import job_name, migration_job, outcome
from taskhub_operator.rollout import image_patch, managed_deployments, progress

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def spec(template: dict[str, Any]) -> dict[str, Any]:
    return {"image": "registry.example/taskhub:1.4.0", "migrations": {"template": template}}


class TestJobName:
    def test_same_image_same_name_other_image_other_name(self) -> None:
        a = job_name("taskhub", "registry.example/taskhub:1.4.0", "expand")
        assert a == job_name("taskhub", "registry.example/taskhub:1.4.0", "expand")
        assert a != job_name("taskhub", "registry.example/taskhub:1.4.1", "expand")
        assert a.startswith("taskhub-migrate-") and len(a) == len("taskhub-migrate-") + 10
        assert job_name("taskhub", "x:1", "contract").startswith("taskhub-contract-")

    def test_a_long_name_stays_a_valid_label_value(self) -> None:
        name = job_name("a" * 80, "x:1", "contract")
        assert len(name) <= 63 and name.endswith(job_name("t", "x:1", "contract")[-10:])


class TestMigrationJob:
    def test_the_migrate_container_gets_the_command_every_container_the_image(self) -> None:
        template = {
            "metadata": {"labels": {"team": "a"}},
            "spec": {
                "serviceAccountName": "taskhub",
                "securityContext": {"runAsNonRoot": True},
                "initContainers": [{"name": "migrate", "env": [{"name": "A", "value": "1"}]}],
                "containers": [{"name": "bootstrap-admin", "args": ["bootstrap-admin"]}],
            },
        }
        job = migration_job(
            taskhub="taskhub", namespace="ns", spec=spec(template), phase="contract"
        )
        pod = job["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["args"] == ["migrate", "--phase", "contract"]
        assert pod["initContainers"][0]["env"] == [{"name": "A", "value": "1"}]
        assert pod["containers"][0]["args"] == ["bootstrap-admin"]
        images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
        assert images == {"registry.example/taskhub:1.4.0"}
        assert pod["restartPolicy"] == "Never"
        assert pod["serviceAccountName"] == "taskhub"
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["team"] == "a" and labels["app.kubernetes.io/component"] == "migrate"
        assert labels["app.kubernetes.io/instance"] == "taskhub"
        assert job["metadata"]["labels"]["taskhub.io/migration-phase"] == "contract"
        assert template["spec"]["initContainers"][0].get("image") is None  # input untouched

    def test_defaults(self) -> None:
        job = migration_job(taskhub="t", namespace="ns", spec=spec({}), phase="expand")
        assert job["spec"]["backoffLimit"] == 2
        assert job["spec"]["activeDeadlineSeconds"] == 600
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert (container["name"], container["args"]) == (
            "migrate",
            ["migrate", "--phase", "expand"],
        )


class TestOutcome:
    def test_complete_failed_running(self) -> None:
        done = outcome(
            {
                "status": {
                    "startTime": "2026-12-01T10:00:00Z",
                    "completionTime": "2026-12-01T10:00:42Z",
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            }
        )
        assert (done.state, done.seconds) == ("succeeded", 42)
        failed = outcome(
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": "DeadlineExceeded",
                            "message": "Job was active longer than specified deadline",
                        }
                    ]
                }
            }
        )
        assert failed.state == "failed"
        assert failed.message == "DeadlineExceeded: Job was active longer than specified deadline"
        assert outcome({"status": {"active": 1, "failed": 1}}).state == "running"
        assert outcome({}).state == "running"


class TestConditions:
    def test_last_transition_time_changes_only_when_the_status_flips(self) -> None:
        first = merge(None, [Condition("Ready", False, "A", "a")], generation=1, now=T0)
        later = T0 + timedelta(minutes=5)
        same = merge(first, [Condition("Ready", False, "B", "b")], generation=2, now=later)
        assert same[0]["lastTransitionTime"] == "2026-12-01T10:00:00Z"
        assert (same[0]["reason"], same[0]["observedGeneration"]) == ("B", 2)
        flipped = merge(same, [Condition("Ready", True, "C")], generation=2, now=later)
        assert flipped[0]["lastTransitionTime"] == "2026-12-01T10:05:00Z"

    def test_untouched_conditions_stay_in_a_stable_order(self) -> None:
        now = merge(
            None,
            [Condition("Ready", True, "x"), Condition("Migrated", True, "y")],
            generation=1,
            now=T0,
        )
        assert [c["type"] for c in now] == ["Migrated", "Ready"]
        kept = merge(now, [Condition("ScalingActive", False, "z")], generation=1, now=T0)
        assert [c["type"] for c in kept] == ["Migrated", "Ready", "ScalingActive"]


class TestImagePatch:
    def test_sets_missing_and_old_images_guarded_by_names(self) -> None:
        deployment = {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api"}, {"name": "sidecar", "image": "s:1"}]}
                }
            }
        }
        ops = image_patch(deployment, "t:2", ["api"])
        patched = jsonpatch.apply_patch(deployment, ops)
        assert patched["spec"]["template"]["spec"]["containers"] == [
            {"name": "api", "image": "t:2"},
            {"name": "sidecar", "image": "s:1"},
        ]
        reordered = {
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar"}, {"name": "api"}]}}}
        }
        try:
            jsonpatch.apply_patch(reordered, ops)
        except jsonpatch.JsonPatchTestFailed:
            pass
        else:
            raise AssertionError("a reordered template must fail the patch's test")

    def test_workers_are_managed_too_once(self) -> None:
        names = managed_deployments(
            {
                "deployments": [{"name": "api"}, {"name": "worker"}],
                "workers": [{"deployment": "worker"}, {"deployment": "mail"}],
            }
        )
        assert [d["name"] for d in names] == ["api", "worker", "mail"]


class TestProgress:
    def deployment(self, **status: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": "api", "generation": 3},
            "spec": {"replicas": 2},
            "status": status,
        }

    def test_done_only_at_the_new_generation_with_every_replica_updated(self) -> None:
        assert (
            progress(
                self.deployment(
                    observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2
                )
            ).state
            == "progressing"
        )
        assert (
            progress(
                self.deployment(
                    observedGeneration=3, replicas=3, updatedReplicas=2, availableReplicas=2
                )
            ).state
            == "progressing"
        )
        assert (
            progress(
                self.deployment(
                    observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=2
                )
            ).state
            == "done"
        )

    def test_a_progress_deadline_is_a_failure(self) -> None:
        stuck = self.deployment(
            observedGeneration=3,
            conditions=[
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "timed out",
                }
            ],
        )
        assert progress(stuck).state == "failed"
