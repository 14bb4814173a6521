"""Fixtures for the Helm chart tests (helpers live in chart_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers sit beside this file; make them importable under any
# --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chart_helpers import PROFILES, Rendered, rendered_profile


@pytest.fixture(scope="session", params=sorted(PROFILES))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return rendered_profile(request.param)


@pytest.fixture(scope="session")
def all_rendered() -> list[Rendered]:
    return [rendered_profile(p) for p in sorted(PROFILES)]
