"""The operator's settings: environment variables prefixed TASKHUB_OPERATOR_."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKHUB_OPERATOR_", extra="ignore")

    # Seconds between two reconciliations of a TaskHub (rollout and scaling).
    interval: float = Field(default=5.0, gt=0)
    # Port of /metrics (Prometheus); 0 serves none.
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    # Timeout of one Kubernetes API request, seconds.
    api_timeout: float = Field(default=10.0, gt=0)


@cache
def get_settings() -> OperatorSettings:
    return OperatorSettings()
