"""`taskhub operator` as a process: killed with SIGKILL mid-migration and
started again, it makes no second Job; it serves /healthz and /metrics and logs
JSON."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskhub_operator.jobs import job_name
from tests.operator.apiserver import ApiServer
from tests.operator.conftest import (
    DEPLOYMENTS,
    NEW,
    OLD,
    TASKHUBS,
    Cluster,
    deployment,
    taskhub,
)
from tests.operator.test_rollout import MANAGED, posts_to_jobs, until_images, until_job
from tests.support.net import free_port
from tests.support.wait import eventually
from tests.workers.conftest import TASKHUB


class Process:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "TASKHUB_OPERATOR_INTERVAL": "0.3",
            "TASKHUB_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "TASKHUB_LOG_JSON": "true",
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    TASKHUB,
                    "operator",
                    "--namespace",
                    "taskhub",
                    "--liveness-port",
                    str(self.health_port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup of any kind
        self.proc.wait(10)

    async def get(self, port: int, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return await client.get(f"http://127.0.0.1:{port}{path}")
        except httpx.HTTPError:
            return None


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Process]:
    handle = Process(tmp_path / "operator.log")
    yield handle
    if handle.proc is not None and handle.proc.poll() is None:
        handle.proc.terminate()
        handle.proc.wait(20)


async def test_killed_mid_migration_and_restarted_it_makes_no_second_job(
    cluster: Cluster, apiserver: ApiServer, process: Process
) -> None:
    process.start()

    async def healthy() -> bool:
        response = await process.get(process.health_port, "/healthz")
        return response is not None and response.status_code == 200

    await eventually(healthy, 30, "the operator's /healthz")
    for name in MANAGED:
        await cluster.create(DEPLOYMENTS, deployment(name, OLD))
    await cluster.create(TASKHUBS, taskhub(NEW))
    expand = job_name("taskhub", NEW, "expand")
    await until_job(cluster, expand)

    process.kill()
    process.start()
    await eventually(healthy, 30, "the restarted operator's /healthz")
    for _ in range(5):  # several passes of the new process
        await eventually(cluster.taskhub, 1, "a pass")
    await cluster.finish_job(expand, succeeded=True)
    await until_images(cluster, NEW)
    assert posts_to_jobs(apiserver).count(expand) == 1

    metrics = await process.get(process.metrics_port, "/metrics")
    assert metrics is not None and metrics.status_code == 200
    text = metrics.text
    assert (
        'taskhub_operator_reconciles_total{namespace="taskhub",outcome="ok",taskhub="taskhub"}'
        in text
    )
    labels = 'namespace="taskhub",phase="expand",taskhub="taskhub"'
    assert f"taskhub_operator_migration_duration_seconds_count{{{labels}}} 1.0" in text

    lines = [line for line in process.log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    assert parsed and len(parsed) >= len(lines) - 2, lines[:5]
