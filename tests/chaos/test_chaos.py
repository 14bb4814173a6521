"""The chaos run of `make chaos`, for 60 seconds with a fixed seed (docs/reliability.md).
Deselect with ``-m 'not chaos'``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.chaos.faults import KINDS, schedule
from tests.chaos.stack import ROOT

SEED = 1414
SECONDS = 60


class TestSchedule:
    def test_replays_from_the_seed(self) -> None:
        assert schedule(SEED, 300) == schedule(SEED, 300)
        assert schedule(SEED, 300) != schedule(SEED + 1, 300)

    def test_every_kind_in_a_minute(self) -> None:
        faults = schedule(SEED, SECONDS)
        assert sorted(f.kind for f in faults) == sorted(KINDS)
        assert all(0 < f.at < SECONDS - 5 for f in faults)

    def test_longer_runs_repeat_the_kinds(self) -> None:
        faults = schedule(SEED, 300)
        assert len(faults) > 2 * len(KINDS)
        assert max(f.at for f in faults) < 300


@pytest.mark.chaos
def test_no_effect_lost_or_duplicated_under_faults() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.chaos",
            f"--seconds={SECONDS}",
            f"--seed={SEED}",
            "--drain-seconds=300",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    assert f"CHAOS_SEED={SEED}" in result.stdout.splitlines()[0]
    assert "no lost or duplicated effect" in result.stdout
