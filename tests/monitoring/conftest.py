"""Fixtures for the monitoring tests (helpers live in monitoring_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .monitoring_helpers import prometheus_bin


@pytest.fixture(scope="session")
def prometheus_dir() -> Path:
    """promtool and prometheus, unpacked by scripts/ensure-prometheus.sh."""
    return prometheus_bin()
