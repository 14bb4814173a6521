from __future__ import annotations

import pytest

from tests.support.users import PASSWORD, Actor, NewUser, create_task

# Test modules outside this change still import these from here.
__all__ = ["PASSWORD", "Actor", "NewUser", "create_task"]


@pytest.fixture(autouse=True)
def cleaned(clean_database: None) -> None:
    """Every test starts on empty tables."""
