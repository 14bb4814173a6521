from __future__ import annotations

import gc

from fastapi import FastAPI

from taskhub_api.settings import Settings


def test_startup_heap_is_frozen_and_gen0_threshold_applied(
    app: FastAPI, settings: Settings
) -> None:
    # The session's app has been started (lifespan): its startup objects are frozen
    # out of the collector's walks, and the youngest generation has the configured size.
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == settings.gc_gen0_threshold
