"""Garbage-collector settings for a long-running server process."""

from __future__ import annotations

import gc


def settle(gen0_threshold: int) -> None:
    """Called once startup is done. What startup built (modules, routes, SQLAlchemy and
    Pydantic metadata: about 140k objects in the API) lives as long as the process, so it
    is frozen out of the collector's walks: a full collection no longer stalls every
    request in flight for tens of milliseconds. And the youngest generation is made
    large enough that the short-lived containers of each request do not set off a
    collection every few requests. Effect measured in docs/benchmarks.md."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
