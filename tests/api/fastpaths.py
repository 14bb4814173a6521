"""Tests that need a fast path (kit/internals.py) on or off whatever the run's setting
(``make test-compat`` turns them all off)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from taskhub_api import dbpool
from taskhub_api.kit import greenlets, internals
from taskhub_api.settings import get_settings


def decide_again() -> None:
    """Forget every decision taken from the settings, and apply the greenlets one."""
    get_settings.cache_clear()
    internals.enabled.cache_clear()
    dbpool.pool_class.cache_clear()
    greenlets.install()


@contextmanager
def fast_paths(**values: bool) -> Iterator[None]:
    """The named fast paths on or off (``greenlets=True``) while the block runs."""
    assert set(values) <= set(internals.FAST_PATHS)
    current = get_settings().fast_paths
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TASKHUB_FAST_PATHS__ENABLED", "true")
        for name in internals.FAST_PATHS:  # the others as they were
            on = values.get(name, current.enabled and getattr(current, name))
            env.setenv(f"TASKHUB_FAST_PATHS__{name.upper()}", str(on).lower())
        decide_again()
        try:
            yield
        finally:
            env.undo()
            decide_again()
