from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job to enqueue: the Celery task name, its keyword arguments (ids only; the job
    re-reads) and its deterministic key, also used as the Celery task id."""

    name: str
    key: str
    kwargs: dict[str, str] = field(default_factory=dict)
