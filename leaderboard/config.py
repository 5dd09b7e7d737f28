"""Typed settings, read once from ``LEADERBOARD_*`` environment variables.

Every component (API, broadcaster, operator, local stack, CLI) reads the same class, so one
variable means the same thing everywhere. A bad value stops the process at start-up with one
line per bad variable (see :func:`load_settings`), never with a traceback.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LEADERBOARD_"


class SettingsError(Exception):
    """Raised with a message that names each bad ``LEADERBOARD_*`` variable, one per line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    env: Literal["dev", "prod"] = Field(
        "dev",
        description="`dev` allows the generated local signing key and anonymous viewers; "
        "`prod` refuses to start without explicit secrets.",
    )
    run_dir: Path = Field(
        Path(".run"),
        description="Folder of the local stack: PostgreSQL data, Redis, logs, dev signing key.",
    )
    host: str = Field("127.0.0.1", description="Address the local stack's services bind to.")

    # -- local stack ports
    api_port: int = Field(8000, ge=1, le=65535, description="API HTTP port.")
    ws_port: int = Field(8001, ge=1, le=65535, description="Broadcaster WebSocket port.")
    redis_port: int = Field(6380, ge=1, le=65535, description="Local Redis port.")
    pg_port: int = Field(
        5433, ge=1, le=65530, description="Port of PostgreSQL member 0; member i uses pg_port + i."
    )
    pg_members: int = Field(
        2, ge=2, le=5, description="PostgreSQL members in the local stack (1 primary + standbys)."
    )
    pg_bin_dir: Path | None = Field(
        None,
        description="PostgreSQL server binaries (initdb, postgres, ...); default: the newest "
        "/usr/lib/postgresql/*/bin.",
    )
    tls: bool = Field(
        False,
        description="Local stack: every connection to Redis and PostgreSQL is TLS, verified "
        "against a CA generated into run_dir/tls, and authenticated (a Redis user per "
        "component); nothing answers in plaintext.",
    )
    pg_database: str = Field("leaderboard", description="Application database name.")
    pg_user: str = Field("leaderboard", description="Application database role.")

    # -- backups (pgBackRest; docs/backups.md)
    backup_repo_path: Path | None = Field(
        None,
        description="Local stack: the folder repository of backups and archived WAL; default "
        "run_dir/backups/repo. Ignored when backup_s3_bucket is set.",
    )
    backup_archiving: bool = Field(
        True,
        description="Local stack: archive the WAL to the backup repository. Off only to measure "
        "what archiving costs (`make bench`): nothing can then be restored.",
    )
    backup_s3_bucket: str = Field("", description="S3 bucket of the backup repository.")
    backup_s3_endpoint: str = Field(
        "", description="S3 endpoint, host[:port] (pgBackRest speaks HTTPS only)."
    )
    backup_s3_region: str = Field("us-east-1", description="S3 region.")
    backup_s3_prefix: str = Field("/leaderboard", description="Path inside the bucket.")
    backup_s3_key: str = Field("", description="S3 access key id.")
    backup_s3_key_secret: SecretStr | None = Field(None, description="S3 secret access key.")
    backup_s3_ca_file: Path | None = Field(
        None, description="CA that the S3 endpoint's certificate is verified against."
    )
    backup_retention_full: int = Field(
        2, ge=1, le=100, description="Full backups kept, with the WAL they need."
    )

    # -- where the services find their dependencies (default: the local stack)
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URI of the primary for the services; default: the local "
        "stack's current primary.",
    )
    redis_url: str | None = Field(None, description="Redis URL; default: the local stack's Redis.")

    # -- API
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes of the API.")
    catalog_path: Path | None = Field(
        None, description="Action catalog (YAML); default: the catalog shipped in the package."
    )
    rate_limit: int = Field(10, ge=1, description="Completions allowed per user per window.")
    rate_window_s: int = Field(60, ge=1, le=86400, description="Rate-limit window, seconds.")
    require_server_scope: bool = Field(
        False,
        description="Completions only from a trusted backend: a token with the `server` scope, "
        'naming the user in the body (`"userId"`); end-user tokens get 403 `forbidden`.',
    )
    max_body_bytes: int = Field(
        16384, ge=256, le=1 << 20, description="Largest request body accepted (else 413)."
    )
    top_cache_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="How long an API process reuses the top 10 it read from Redis (0: never); "
        "its own completions refresh it at once.",
    )
    around: int = Field(
        2, ge=0, le=50, description="Neighbours shown above and below a user in /users/{id}."
    )
    redis_prefix: str = Field("", description="Prefix for every Redis key and channel.")
    redis_timeout_s: float = Field(
        0.5, gt=0, le=30, description="Redis connect/command timeout; past it, fall back."
    )
    db_pool_min: int = Field(4, ge=0, le=200, description="PostgreSQL connections kept open.")
    db_pool_max: int = Field(32, ge=1, le=500, description="PostgreSQL connections at most.")
    db_award_batches: int = Field(
        2,
        ge=1,
        le=64,
        description="Award transactions in flight per API process; completions that arrive "
        "meanwhile are committed together in the next one (group commit).",
    )
    db_timeout_s: float = Field(
        3.0, gt=0, le=60, description="Bound on one database call (connect, acquire, query)."
    )
    db_write_hold_s: float = Field(
        4.0,
        ge=0,
        le=60,
        description="How long a completion waits for a writable primary (a switchover, a "
        "failover) before it answers 503; 0: answer 503 at once.",
    )
    db_startup_timeout_s: float = Field(
        60.0, gt=0, description="How long a starting API waits for a writable primary."
    )
    reconcile_interval_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How often one API process checks the latest completions against the "
        "Redis rankings and records what they lack (docs/api.md#ranking-consistency).",
    )
    reconcile_lag_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Age at which a completion is checked: its transaction must have ended by "
        "then. A missed ranking update is repaired within lag + interval after its commit.",
    )

    # -- broadcaster
    ws_allow_anonymous: bool | None = Field(
        None,
        description="Accept WebSocket viewers without a token; default: yes in dev, no in prod.",
    )
    ws_max_connections: int = Field(
        20000, ge=1, description="WebSocket connections per broadcaster; more are closed (1013)."
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, le=600, description="Heartbeat ping interval to each WebSocket client."
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, le=600, description="A client silent this long after a ping is dropped."
    )
    ws_slow_client_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A client that stays unwritable this long is closed (code 4008).",
    )
    ws_handshake_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A connection that has not completed its WebSocket handshake this long "
        "after it was accepted is dropped; so is one that does not answer a close within it.",
    )
    ws_allowed_origins: str = Field(
        "",
        max_length=4096,
        description="Comma-separated origins (scheme://host[:port]) whose pages may open a "
        "WebSocket; a browser handshake from any other Origin gets 403 forbidden (cross-site "
        "WebSocket hijacking). Empty: any origin. Clients that send no Origin (not browsers) "
        "are not affected.",
    )
    ws_drain_s: float = Field(
        10.0, gt=0, le=300, description="On SIGTERM, how long clients get to close (1001)."
    )

    # -- failover operator
    operator_enabled: bool = Field(
        True, description="`leaderboard up` runs the failover operator over the local members."
    )
    operator_metrics_port: int = Field(
        8002,
        ge=1,
        le=65535,
        description="The operator's Prometheus metrics port (`leaderboard operator`; the local "
        "stack's operator too).",
    )
    operator_health_port: int = Field(
        8003, ge=1, le=65535, description="`leaderboard operator`: liveness port (/healthz)."
    )
    durability: Literal["required", "preferred"] = Field(
        "required",
        description="`required`: promote only a synchronous replica and make writes wait for "
        "one; `preferred`: fail over to any replica and run unreplicated if none is left.",
    )
    probe_interval_s: float = Field(
        0.4, gt=0, le=10, description="How often the operator probes each member."
    )
    probe_timeout_s: float = Field(1.0, gt=0, le=30, description="Bound on one probe.")
    failure_threshold: int = Field(
        3, ge=2, le=100, description="Consecutive failed probes that declare the primary dead."
    )

    # -- JWT (RFC 8725: the algorithm is pinned here, never taken from the token)
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field(
        "HS256", description="The only JWT algorithm accepted."
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 secret, or several separated by commas to rotate: the first signs "
        "(dev tokens), every one verifies; in dev, default: a key generated once into run_dir.",
    )
    jwt_public_key: str | None = Field(None, description="PEM public key for RS256/ES256.")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL for RS256/ES256 (keys rotate).")
    jwt_jwks_cooldown_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="Least time between two JWKS refetches caused by an unknown `kid` "
        "(a rotated-in key is found within it; forged kids cannot hammer the issuer).",
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` claim, if set.")
    jwt_audience: str | None = Field(None, description="Required `aud` claim, if set.")
    jwt_leeway_s: float = Field(
        10.0, ge=0, le=300, description="Clock skew tolerated on `exp`/`nbf`, seconds."
    )
    jwt_max_lifetime_s: float = Field(
        86400.0,
        gt=0,
        le=31_536_000,
        description="Longest token lifetime accepted: a token whose `exp` is further away "
        "than this is refused (401), and `leaderboard token --ttl` cannot mint one.",
    )

    @model_validator(mode="after")
    def _check_jwt(self) -> Settings:
        if self.jwt_algorithm != "HS256" and not (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError(
                f"{ENV_PREFIX}JWT_ALGORITHM={self.jwt_algorithm} needs "
                f"{ENV_PREFIX}JWT_PUBLIC_KEY or {ENV_PREFIX}JWT_JWKS_URL"
            )
        if self.jwt_jwks_url is not None and not _trusted_url(self.jwt_jwks_url):
            # Keys fetched in plaintext can be swapped on the way: anyone could sign.
            raise ValueError(
                f"{ENV_PREFIX}JWT_JWKS_URL must be https:// (http:// only to a loopback address)"
            )
        if self.jwt_secret is not None:
            raw = self.jwt_secret.get_secret_value()
            if any(len(part.strip().encode()) < 32 for part in raw.split(",")):
                # RFC 7518 3.2: an HS256 key is at least as long as the hash
                raise ValueError(f"{ENV_PREFIX}JWT_SECRET: each secret must be at least 32 bytes")
        return self

    @property
    def jwt_secrets(self) -> list[str]:
        """The configured HS256 secrets, the signing one first (empty: none configured)."""
        if self.jwt_secret is None:
            return []
        return [part.strip() for part in self.jwt_secret.get_secret_value().split(",")]

    @cached_property
    def allowed_origins(self) -> frozenset[str]:
        parts = (o.strip().rstrip("/").lower() for o in self.ws_allowed_origins.split(","))
        return frozenset(o for o in parts if o)

    @property
    def anonymous_viewers(self) -> bool:
        return self.env == "dev" if self.ws_allow_anonymous is None else self.ws_allow_anonymous

    @cached_property
    def run_path(self) -> Path:
        return self.run_dir.resolve()

    def member_port(self, index: int) -> int:
        return self.pg_port + index


def _describe(error: dict[str, object]) -> str:
    loc = error.get("loc") or ()
    assert isinstance(loc, tuple)
    message = str(error.get("msg", "invalid value"))
    if not loc:  # a model-level check: its message already names the variables
        return message.removeprefix("Value error, ")
    variable = ENV_PREFIX + str(loc[0]).upper()
    return f"{variable}={error.get('input')!r}: {message}"


def load_settings(*, verifies_tokens: bool = True, **overrides: object) -> Settings:
    """Read the settings; raise :class:`SettingsError` naming every bad variable.

    ``verifies_tokens``: the process verifies or mints JWTs (all but the operator), so in
    prod it needs an explicit key; the operator's pod is given none."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors(include_url=False)]
        raise SettingsError("\n".join(f"invalid setting {line}" for line in lines)) from None
    hs256 = settings.jwt_algorithm == "HS256"
    if verifies_tokens and settings.env == "prod" and hs256 and settings.jwt_secret is None:
        raise SettingsError(
            f"invalid setting {ENV_PREFIX}JWT_SECRET is required when {ENV_PREFIX}ENV=prod"
        )
    return settings


def settings_table() -> str:
    """The README's settings table, generated so the README cannot drift from the code."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


def _trusted_url(url: str) -> bool:
    """https, or http to this machine's loopback (an issuer on the same host, tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
