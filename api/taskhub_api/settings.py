"""Application settings: one object, grouped, read from ``TASKHUB_*`` variables.

Nested groups use ``__``: ``TASKHUB_DB__URL``, ``TASKHUB_AUTH__SECRET_KEY``. Every
setting has a local default so ``make dev`` works without a ``.env`` file.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from functools import lru_cache

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    # URLs carry passwords: a validation error never repeats the value it rejects.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/taskhub"
    # Read-only endpoint (a streaming replica, usually through PgBouncer). Unset: reads
    # go to the primary.
    replica_url: str | None = None
    # Where the outbox relay LISTENs for the commits' NOTIFY: the primary itself, since
    # PgBouncer in transaction mode never delivers a notification. Unset: ``url``.
    listen_url: str | None = None
    # A fixed pool: SQLAlchemy closes overflow connections on check-in, so under steady
    # load above pool_size an overflow churns connections (docs/benchmarks.md, "Figures
    # behind the code"). Past the pool, requests wait pool_timeout and then get a 503.
    pool_size: int = Field(default=20, ge=1)
    max_overflow: int = Field(default=0, ge=0)
    # Seconds a request waits for a pooled connection before it gets a 503.
    pool_timeout: float = Field(default=2.0, gt=0)
    # Seconds to establish a new connection.
    connect_timeout: float = Field(default=2.0, gt=0)
    # At start the API opens pool_size connections to the primary and to the replica
    # (and so as many PgBouncer server connections) before /health/ready says ok, for
    # at most about this long; 0 skips it (see docs/data.md, "Start-up").
    warm_up_seconds: float = Field(default=10.0, ge=0)
    # asyncpg's prepared statement cache. Must be 0 behind PgBouncer < 1.21 in
    # transaction mode; newer PgBouncer with max_prepared_statements handles it.
    statement_cache_size: int = Field(default=100, ge=0)
    # Upper bound of one statement, so no request hangs on a database that stopped
    # answering (PgBouncer queues queries while its server is gone).
    command_timeout: float = Field(default=3.0, gt=0)
    # The replica is skipped while it replays more than this many bytes of WAL behind
    # the primary (see docs/data.md).
    max_replica_lag_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    # Health probes of the primary and the replica: every interval, each bounded by
    # probe_timeout. They decide where reads go and make writes fail fast.
    health_interval_seconds: float = Field(default=0.25, gt=0)
    probe_timeout_seconds: float = Field(default=0.5, gt=0)
    # A read on the replica taking longer is retried on the primary: a replica that
    # just died costs a request this much, not a failure.
    replica_read_timeout: float = Field(default=1.0, gt=0)

    @field_validator("listen_url")
    @classmethod
    def _listen_url_is_postgresql(cls, url: str | None) -> str | None:
        if url is not None:
            postgresql_url_problem(url)
        return url


def postgresql_url_problem(url: str) -> None:
    """Raises ValueError, naming neither the URL nor its password, unless ``url`` is
    a PostgreSQL URL with a host: ``postgresql[+driver]://user:password@host:port/db``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("is not a URL (postgresql+asyncpg://user:password@host:port/db)") from None
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"must be a postgresql:// URL, not {parsed.get_backend_name()}://")
    if not parsed.host:
        raise ValueError("names no host")


class AuthSettings(BaseModel):
    # Signing key of the built-in token issuer. The default is random per process:
    # fine for tests, but set it (make dev does) so tokens survive restarts.
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(48)))
    issuer: str = "taskhub"
    audience: str = "taskhub-api"
    access_token_ttl_seconds: int = Field(default=900, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # Keycloak (or any OIDC issuer), e.g. https://sso.example.com/realms/taskhub. When
    # set, its tokens are accepted too (validated via discovery and JWKS); tokens of the
    # built-in issuer keep working for local accounts such as the bootstrap admin.
    oidc_issuer: str | None = None
    # Where to fetch the discovery document when the issuer's public URL is not
    # reachable from the pod (in-cluster service URL). Defaults to the issuer's.
    oidc_discovery_url: str | None = None
    # Required `aud` (Keycloak: an audience mapper on the client adds it).
    oidc_audience: str = "taskhub-api"
    # Client whose client roles (resource_access.<client>.roles) count as TaskHub roles,
    # besides realm roles (realm_access.roles).
    oidc_client_id: str = "taskhub-api"
    oidc_algorithms: list[str] = ["RS256"]
    jwks_cache_seconds: int = Field(default=300, ge=10)
    # A token with an unknown key id refreshes the JWKS (key rotation), at most once per
    # this many seconds, so a flood of forged key ids cannot hammer the issuer.
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    oidc_timeout_seconds: float = Field(default=3.0, gt=0)
    # Tolerated clock skew when checking exp/iat/nbf.
    leeway_seconds: int = Field(default=10, ge=0, le=300)
    # How long an API process reuses a principal row it read (identity/principal_cache.py).
    # A disabled account, a role change or an ended session made through another
    # process takes effect there within this; below 1 s by contract. 0: read every time.
    principal_cache_seconds: float = Field(default=0.5, ge=0, lt=1)


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every key, so several deployments (or test runs) can share a server.
    key_prefix: str = "taskhub:"
    # Redis is not a source of truth: a slow or absent Redis must cost little.
    socket_timeout: float = Field(default=0.25, gt=0)
    connect_timeout: float = Field(default=0.25, gt=0)
    # After a failure Redis is left alone this long before the next attempt.
    retry_after_seconds: float = Field(default=1.0, gt=0)
    max_connections: int = Field(default=50, ge=1)


class CacheSettings(BaseModel):
    enabled: bool = True
    ttl_seconds: int = Field(default=300, ge=1)


class Rate(BaseModel):
    """A token bucket: ``requests`` per ``per_seconds``, bursts up to ``requests``."""

    requests: int = Field(ge=1)
    per_seconds: float = Field(default=60.0, gt=0)


class RateLimitSettings(BaseModel):
    enabled: bool = True
    # Per principal, by its most privileged role. Generous: a person never meets them.
    roles: dict[str, Rate] = Field(
        default_factory=lambda: {
            "admin": Rate(requests=3000),
            "user": Rate(requests=1200),
            "viewer": Rate(requests=1200),
        }
    )
    # POST /auth/token per client IP and username (password guessing).
    token: Rate = Rate(requests=10, per_seconds=60)
    # Per client IP, whatever the username or token: guessing spread over many
    # usernames (spraying), account creation (each costs a password hash, a row and a
    # welcome email), and the refresh and logout endpoints.
    token_per_ip: Rate = Rate(requests=30, per_seconds=60)
    register_per_ip: Rate = Rate(requests=20, per_seconds=600)
    refresh_per_ip: Rate = Rate(requests=60, per_seconds=60)
    logout_per_ip: Rate = Rate(requests=30, per_seconds=60)
    # Peers whose X-Forwarded-For is believed (the ingress), as CIDRs.
    trusted_proxies: list[str] = Field(default_factory=list)


class PaginationSettings(BaseModel):
    # Signs cursors so a client cannot forge or alter them. Derived from the auth key
    # when unset.
    cursor_key: SecretStr | None = None


class IdempotencySettings(BaseModel):
    retention_hours: int = Field(default=24, ge=24)


class BrokerSettings(BaseModel):
    url: str = "amqp://guest:guest@127.0.0.1:5672//"
    # Job retries: attempt n waits about base * 2**(n-1) seconds (with full jitter,
    # capped); after max_retries retries the message goes to the queue's DLQ.
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=2.0, ge=1.0)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=1.0)
    # How long a worker's claim on a job holds; a job whose worker died is taken
    # over after it. Longer than any job may run.
    job_lease_seconds: float = Field(default=120.0, ge=1.0)
    # Outbox relay: rows per transaction, and the poll interval when no NOTIFY came.
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=1.0, gt=0)


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1025, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "TaskHub <taskhub@taskhub.local>"
    starttls: bool = False
    ssl: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0)


def webhook_key_bytes(value: SecretStr) -> bytes:
    """A ``webhooks.secret_keys`` value: 32 bytes in base64 (standard or URL-safe,
    padding optional), e.g. ``openssl rand -base64 32``."""
    text = value.get_secret_value().strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("is not base64") from exc
    if len(key) != 32:
        raise ValueError(f"must be 32 bytes (AES-256), not {len(key)}")
    return key


class WebhookSettings(BaseModel):
    # Networks deliveries may reach although they are not public (SSRF guard, see
    # docs/security.md): loopback receivers in tests and local development, an
    # in-cluster receiver. Link-local and cloud metadata addresses stay refused.
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    timeout: float = Field(default=10.0, gt=0, le=60)
    # Keys that encrypt webhook signing secrets at rest (AES-256-GCM), by key id:
    # TASKHUB_WEBHOOKS__SECRET_KEYS='{"2026-12": "<base64 of 32 bytes>"}'. New secrets
    # use active_key_id (optional with one key); older keys stay listed until
    # `taskhub webhooks rotate-key` has re-encrypted everything. Unset: a key derived
    # from auth.secret_key, for development only (a warning says so).
    secret_keys: dict[str, SecretStr] = Field(default_factory=dict)
    active_key_id: str | None = None

    @field_validator("allowed_networks")
    @classmethod
    def _allowed_networks_mean_what_they_say(
        cls, networks: list[IPvAnyNetwork]
    ) -> list[IPvAnyNetwork]:
        from taskhub_api.addresses import allow_list_problems

        problems = allow_list_problems(networks)
        if problems:
            raise ValueError("; ".join(problems))
        return networks

    @field_validator("secret_keys")
    @classmethod
    def _keys_are_aes_256(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, value in keys.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", key_id):
                raise ValueError(f"key id {key_id!r}: 1-32 of A-Z a-z 0-9 . _ -")
            try:
                webhook_key_bytes(value)
            except ValueError as exc:
                raise ValueError(f"key {key_id!r} {exc}") from None
        return keys

    @model_validator(mode="after")
    def _active_key_is_listed(self) -> WebhookSettings:
        if self.active_key_id is None:
            if len(self.secret_keys) > 1:
                raise ValueError("active_key_id is needed when secret_keys has several keys")
        elif self.active_key_id not in self.secret_keys:
            raise ValueError(f"active_key_id {self.active_key_id!r} is not in secret_keys")
        return self


class MaintenanceSettings(BaseModel):
    interval_seconds: float = Field(default=3600.0, ge=1.0)
    deleted_task_retention_days: float = Field(default=30.0, ge=0)
    published_outbox_retention_hours: float = Field(default=24.0, ge=0)
    finished_job_retention_days: float = Field(default=7.0, ge=0)


def otel_exporting() -> bool:
    """Whether the standard ``OTEL_*`` variables ask for traces to be exported: an
    exporter other than ``none``, or an OTLP endpoint (and the SDK not disabled)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class TracingSettings(BaseModel):
    # OpenTelemetry tracing (see docs/async.md, "Tracing"). Off: no SDK, no
    # instrumentation is installed. Exporters, endpoint, sampler and service name come
    # from the standard OTEL_* variables.
    enabled: bool = Field(default_factory=otel_exporting)


class FastPathSettings(BaseModel):
    """The fast paths that use a library's internals (kit/internals.py), each on by
    default and used only on the library version it was written for.
    ``TASKHUB_FAST_PATHS__ENABLED=false`` turns them all off."""

    enabled: bool = True
    # SQLAlchemy's greenlet_spawn reuses idle greenlets (kit/greenlets.py).
    greenlets: bool = True
    # The pools serve waiting checkouts in arrival order (dbpool.FairQueue).
    fair_pool: bool = True
    # Driver statements of a session begin its transaction with a bare BEGIN
    # (db.driver_connection).
    driver_begin: bool = True
    # Route parameters solved by a plan made at start-up (kit/routing.py).
    planned_routes: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKHUB_",
        env_nested_delimiter="__",
        extra="ignore",
        # URLs carry passwords: a validation error never repeats the value it rejects.
        hide_input_in_errors=True,
    )

    environment: str = "local"
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Allocations between two collections of the youngest generation (Python: 700).
    gc_gen0_threshold: int = Field(default=50_000, ge=100)

    db: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    pagination: PaginationSettings = PaginationSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    redis: RedisSettings = RedisSettings()
    cache: CacheSettings = CacheSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    broker: BrokerSettings = BrokerSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhooks: WebhookSettings = WebhookSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    fast_paths: FastPathSettings = FastPathSettings()

    bootstrap_admin_username: str = "admin"
    bootstrap_admin_email: str = "admin@taskhub.local"
    bootstrap_admin_password: SecretStr | None = None

    @property
    def cursor_key(self) -> bytes:
        key = self.pagination.cursor_key or self.auth.secret_key
        return ("cursor:" + key.get_secret_value()).encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()
