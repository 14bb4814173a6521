"""Rollouts gated on their migration: the real operator against the API server."""

from __future__ import annotations

from typing import Any

from taskhub_operator.jobs import job_name
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import (
    DEPLOYMENTS,
    JOBS,
    NEW,
    OLD,
    TASKHUBS,
    Cluster,
    deployment,
    running_operator,
    taskhub,
)
from tests.support.wait import eventually

NEWER = "registry.example/taskhub:1.4.1"
MANAGED = ("taskhub-api", "taskhub-relay")


async def status_of(cluster: Cluster, kind: str) -> tuple[str, str] | None:
    condition = await cluster.condition(kind)
    return (condition["status"], condition["reason"]) if condition else None


async def until_condition(cluster: Cluster, kind: str, status: str, reason: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        condition = await cluster.condition(kind)
        if condition and (condition["status"], condition["reason"]) == (status, reason):
            return condition
        return None

    try:
        return await eventually(check, 15, f"{kind}={status} ({reason})")  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(
            f"{kind}: wanted {status}/{reason}, have {await cluster.condition(kind)}"
        ) from None


async def until_job(cluster: Cluster, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        return await cluster.get(f"{JOBS}/{name}")

    return await eventually(check, 15, f"Job {name}")  # type: ignore[no-any-return]


async def until_images(cluster: Cluster, image: str) -> None:
    async def check() -> bool:
        return all([await cluster.image_of(name) == image for name in MANAGED])

    await eventually(check, 15, f"every managed Deployment on {image}")


async def roll_all(cluster: Cluster) -> None:
    for name in MANAGED:
        await cluster.roll(name)


async def bring_up(cluster: Cluster, image: str = OLD, **spec: Any) -> None:
    """A first install: the Deployments (on the release's image, as the chart
    renders them when none exists yet), the TaskHub, its migration, the rollout
    and its contract."""
    for name in MANAGED:
        await cluster.create(DEPLOYMENTS, deployment(name, image))
    await cluster.create(TASKHUBS, taskhub(image, **spec))
    await complete_rollout(cluster, image)


async def complete_rollout(cluster: Cluster, image: str) -> None:
    await until_job(cluster, job_name("taskhub", image, "expand"))
    await cluster.finish_job(job_name("taskhub", image, "expand"), succeeded=True)
    await until_images(cluster, image)
    await roll_all(cluster)
    await until_job(cluster, job_name("taskhub", image, "contract"))
    await cluster.finish_job(job_name("taskhub", image, "contract"), succeeded=True)
    await until_condition(cluster, "Migrated", "True", "ContractSucceeded")


async def set_image(cluster: Cluster, image: str) -> None:
    await cluster.patch(f"{TASKHUBS}/taskhub", {"spec": {"image": image}})


def posts_to_jobs(api: ApiServer) -> list[str]:
    return [
        r.data["metadata"]["name"]
        for r in api
        if r.method == "POST" and r.url.path == JOBS and isinstance(r.data, dict)
    ]


class TestGate:
    async def test_a_first_install_is_rolled_out_only_after_its_migration(
        self, cluster: Cluster, operator: Any
    ) -> None:
        for name in MANAGED:
            await cluster.create(DEPLOYMENTS, deployment(name, OLD))
        await cluster.create(TASKHUBS, taskhub(OLD))
        job = await until_job(cluster, job_name("taskhub", OLD, "expand"))
        await until_condition(cluster, "Migrated", "False", "MigrationRunning")
        assert await status_of(cluster, "RolledOut") == ("False", "WaitingForMigration")
        assert "currentImage" not in (await cluster.taskhub())["status"]

        pod = job["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["image"] == OLD
        assert container["args"] == ["migrate", "--phase", "expand"]
        assert container["env"] == [{"name": "TASKHUB_DB__URL", "value": "postgresql+asyncpg://db"}]
        assert pod["spec"]["serviceAccountName"] == "taskhub"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["restartPolicy"] == "Never"
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
        assert job["spec"]["backoffLimit"] == 2
        assert job["spec"]["activeDeadlineSeconds"] == 600
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("TaskHub", "taskhub", True)

        await complete_rollout(cluster, OLD)
        body = await cluster.taskhub()
        assert body["status"]["currentImage"] == OLD
        assert body["status"]["rollout"]["phase"] == "Complete"
        assert await status_of(cluster, "RolledOut") == ("True", "RolledOut")
        assert await status_of(cluster, "Ready") == ("True", "Available")

    async def test_the_gate_holds_while_the_job_runs_then_the_image_rolls_out(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        await until_job(cluster, job_name("taskhub", NEW, "expand"))
        migrated = await until_condition(cluster, "Migrated", "False", "MigrationRunning")
        assert await status_of(cluster, "RolledOut") == ("False", "WaitingForMigration")
        # Ready: the old version keeps serving.
        assert await status_of(cluster, "Ready") == ("True", "Available")
        for _ in range(3):  # several passes: the gate holds
            await eventually(cluster.taskhub, 1, "a pass")
            assert [await cluster.image_of(n) for n in MANAGED] == [OLD, OLD]
        # lastTransitionTime moves only when the status flips.
        again = await cluster.condition("Migrated")
        assert again is not None
        assert again["lastTransitionTime"] == migrated["lastTransitionTime"]

        await cluster.finish_job(job_name("taskhub", NEW, "expand"), succeeded=True)
        await until_images(cluster, NEW)
        await until_condition(cluster, "RolledOut", "False", "RollingOut")
        assert (await cluster.taskhub())["status"]["currentImage"] == OLD
        await roll_all(cluster)
        await until_condition(cluster, "RolledOut", "True", "RolledOut")
        assert (await cluster.taskhub())["status"]["currentImage"] == NEW
        await cluster.until_events("ImageUpdated", 2)
        reasons = {e["reason"] for e in await cluster.events()}
        assert {
            "RolloutStarted",
            "MigrationStarted",
            "MigrationSucceeded",
            "ImageUpdated",
        } <= reasons

    async def test_a_failed_migration_keeps_the_old_version_until_a_fixed_image(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        broken = job_name("taskhub", NEW, "expand")
        await until_job(cluster, broken)
        await cluster.finish_job(broken, succeeded=False, message="relation task has no column x")
        failed = await until_condition(cluster, "Migrated", "False", "MigrationFailed")
        assert "relation task has no column x" in failed["message"]
        assert "BackoffLimitExceeded" in failed["message"]
        assert await status_of(cluster, "RolledOut") == ("False", "MigrationFailed")
        assert await status_of(cluster, "Ready") == ("True", "Available")
        warnings = await cluster.until_events("MigrationFailed")
        assert len(warnings) == 1
        assert warnings[0]["type"] == "Warning"
        assert "relation task has no column x" in warnings[0]["message"]
        assert [await cluster.image_of(n) for n in MANAGED] == [OLD, OLD]
        assert (await cluster.taskhub())["status"]["rollout"]["phase"] == "Failed"

        await set_image(cluster, NEWER)  # the fixed image starts over
        await complete_rollout(cluster, NEWER)
        assert (await cluster.taskhub())["status"]["currentImage"] == NEWER

    async def test_deleting_the_failed_job_retries_the_same_image(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        name = job_name("taskhub", NEW, "expand")
        await until_job(cluster, name)
        await cluster.finish_job(name, succeeded=False)
        await until_condition(cluster, "Migrated", "False", "MigrationFailed")
        await cluster.delete(f"{JOBS}/{name}")
        retried = await until_job(cluster, name)
        assert "status" not in retried or not retried["status"]
        await until_condition(cluster, "Migrated", "False", "MigrationRunning")
        await complete_rollout(cluster, NEW)

    async def test_an_image_changed_mid_migration_goes_through_the_gate_again(
        self, cluster: Cluster, operator: Any, apiserver: ApiServer
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        first = job_name("taskhub", NEW, "expand")
        await until_job(cluster, first)
        await set_image(cluster, NEWER)
        second = job_name("taskhub", NEWER, "expand")
        await until_job(cluster, second)
        # The superseded Job is left to finish, and its success rolls nothing out.
        assert await cluster.get(f"{JOBS}/{first}") is not None
        await cluster.finish_job(first, succeeded=True)
        for _ in range(3):
            await eventually(cluster.taskhub, 1, "a pass")
            assert [await cluster.image_of(n) for n in MANAGED] == [OLD, OLD]
        await cluster.until_events("RolloutSuperseded")
        await complete_rollout(cluster, NEWER)
        assert posts_to_jobs(apiserver).count(second) == 1

    async def test_a_deadline_exceeded_rollout_fails_with_a_warning(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        await until_job(cluster, job_name("taskhub", NEW, "expand"))
        await cluster.finish_job(job_name("taskhub", NEW, "expand"), succeeded=True)
        await until_images(cluster, NEW)
        await cluster.roll("taskhub-relay")
        stuck = await cluster.deployment("taskhub-api")
        await cluster.set_status(
            f"{DEPLOYMENTS}/taskhub-api",
            {
                "observedGeneration": stuck["metadata"]["generation"],
                "replicas": 3,
                "updatedReplicas": 1,
                "availableReplicas": 2,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "taskhub-api-7d9" has timed out progressing.',
                    }
                ],
            },
        )
        failed = await until_condition(cluster, "RolledOut", "False", "ProgressDeadlineExceeded")
        assert "has timed out progressing" in failed["message"]
        await cluster.until_events("RolloutFailed")
        body = await cluster.taskhub()
        assert body["status"]["currentImage"] == OLD
        assert body["status"]["rollout"]["phase"] == "Failed"
        assert await cluster.get(f"{JOBS}/{job_name('taskhub', NEW, 'contract')}") is None

        # The Deployment made it after all (capacity came back): the rollout carries on,
        # and the Warning was posted once.
        await cluster.roll("taskhub-api")
        await until_condition(cluster, "RolledOut", "True", "RolledOut")
        await until_job(cluster, job_name("taskhub", NEW, "contract"))
        assert len(await cluster.events("RolloutFailed")) == 1
        assert (await cluster.taskhub())["status"]["currentImage"] == NEW


class TestExpandContract:
    async def test_the_contract_job_runs_only_after_every_deployment_rolled_out(
        self, cluster: Cluster, operator: Any, apiserver: ApiServer
    ) -> None:
        await bring_up(cluster)
        await set_image(cluster, NEW)
        await until_job(cluster, job_name("taskhub", NEW, "expand"))
        await cluster.finish_job(job_name("taskhub", NEW, "expand"), succeeded=True)
        await until_images(cluster, NEW)
        await cluster.roll("taskhub-api")  # the relay is still rolling
        contract = job_name("taskhub", NEW, "contract")
        for _ in range(3):
            await eventually(cluster.taskhub, 1, "a pass")
            assert await cluster.get(f"{JOBS}/{contract}") is None
        await cluster.roll("taskhub-relay")
        job = await until_job(cluster, contract)
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "migrate",
            "--phase",
            "contract",
        ]
        await until_condition(cluster, "Migrated", "True", "ContractRunning")
        await cluster.finish_job(contract, succeeded=True)
        await until_condition(cluster, "Migrated", "True", "ContractSucceeded")

        expand = job_name("taskhub", NEW, "expand")
        order = [
            ("job", r.data["metadata"]["name"])
            if r.method == "POST" and r.url.path == JOBS
            else ("image", r.url.path.rsplit("/", 1)[1])
            for r in apiserver
            if r.headers.get("User-Agent", "").startswith("taskhub-operator")
            and (
                (r.method == "POST" and r.url.path == JOBS)
                or (r.method == "PATCH" and r.url.path.startswith(DEPLOYMENTS))
            )
        ]
        new_part = order[order.index(("job", expand)) :]
        assert new_part == [
            ("job", expand),
            ("image", "taskhub-api"),
            ("image", "taskhub-relay"),
            ("job", contract),
        ]

    async def test_migrations_disabled_rolls_out_directly(
        self, cluster: Cluster, operator: Any
    ) -> None:
        for name in MANAGED:
            await cluster.create(DEPLOYMENTS, deployment(name, OLD))
        await cluster.create(TASKHUBS, taskhub(NEW, migrations={"enabled": False}))
        await until_images(cluster, NEW)
        await roll_all(cluster)
        await until_condition(cluster, "RolledOut", "True", "RolledOut")
        assert await status_of(cluster, "Migrated") == ("True", "MigrationsDisabled")
        assert await cluster.jobs() == []


class TestRestart:
    async def test_an_operator_restarted_mid_migration_makes_no_second_job(
        self, cluster: Cluster, apiserver: ApiServer
    ) -> None:
        async with running_operator():
            await bring_up(cluster)
            await set_image(cluster, NEW)
            await until_job(cluster, job_name("taskhub", NEW, "expand"))
        async with running_operator():
            await until_condition(cluster, "Migrated", "False", "MigrationRunning")
            for _ in range(3):
                await eventually(cluster.taskhub, 1, "a pass")
            await cluster.finish_job(job_name("taskhub", NEW, "expand"), succeeded=True)
            await until_images(cluster, NEW)
        names = posts_to_jobs(apiserver)
        assert names.count(job_name("taskhub", NEW, "expand")) == 1
        assert (
            len(
                [
                    j
                    for j in await cluster.jobs()
                    if "1.4.0" in j["metadata"]["annotations"]["taskhub.io/image"]
                ]
            )
            == 1
        )


class TestPausedAndDrift:
    async def test_paused_observes_and_changes_nothing(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await bring_up(cluster)
        await cluster.patch(f"{TASKHUBS}/taskhub", {"spec": {"paused": True, "image": NEW}})
        await until_condition(cluster, "RolledOut", "False", "Paused")
        for _ in range(3):
            await eventually(cluster.taskhub, 1, "a pass")
        assert await cluster.get(f"{JOBS}/{job_name('taskhub', NEW, 'expand')}") is None
        assert [await cluster.image_of(n) for n in MANAGED] == [OLD, OLD]
        assert await status_of(cluster, "Ready") == ("True", "Available")
        await cluster.patch(f"{TASKHUBS}/taskhub", {"spec": {"paused": False}})
        await complete_rollout(cluster, NEW)

    async def test_an_image_set_by_hand_is_set_back(self, cluster: Cluster, operator: Any) -> None:
        await bring_up(cluster)
        patched = await cluster.deployment("taskhub-api")
        patched["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/image:1"
        await cluster.patch(f"{DEPLOYMENTS}/taskhub-api", {"spec": patched["spec"]})
        await eventually(
            lambda: _image_is(cluster, "taskhub-api", OLD), 15, "the drift to be corrected"
        )
        await cluster.until_events("ImageDriftCorrected")

    async def test_a_missing_deployment_is_a_condition_not_a_crash(
        self, cluster: Cluster, operator: Any
    ) -> None:
        await cluster.create(DEPLOYMENTS, deployment("taskhub-api", OLD))
        await cluster.create(TASKHUBS, taskhub(OLD))
        await until_job(cluster, job_name("taskhub", OLD, "expand"))
        await cluster.finish_job(job_name("taskhub", OLD, "expand"), succeeded=True)
        missing = await until_condition(cluster, "RolledOut", "False", "DeploymentNotFound")
        assert "taskhub-relay" in missing["message"]
        assert await status_of(cluster, "Ready") == ("False", "DeploymentNotFound")
        await cluster.create(DEPLOYMENTS, deployment("taskhub-relay", OLD))
        await until_condition(cluster, "RolledOut", "False", "RollingOut")


async def _image_is(cluster: Cluster, name: str, image: str) -> bool:
    return await cluster.image_of(name) == image
