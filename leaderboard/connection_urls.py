"""Where the services find PostgreSQL and Redis: the configured URLs, or the local stack's.

The local stack's URLs are made here and nowhere else (the stack itself, its status and a
`leaderboard api` started by hand all use these), plaintext or, with ``LEADERBOARD_TLS``,
TLS with the stack's CA and each component's own Redis user."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from leaderboard import devsecrets
from leaderboard.certs import TlsFiles
from leaderboard.config import Settings


def database_url(settings: Settings) -> str:
    """The configured URL, else every local member with ``target_session_attrs=read-write``:
    the driver connects to whichever member is the primary, before and after a failover."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    password = devsecrets.read_or_create(devsecrets.app_password_path(settings.run_path))
    hosts = ",".join(
        f"{settings.host}:{settings.member_port(i)}" for i in range(settings.pg_members)
    )
    return (
        f"postgresql://{settings.pg_user}:{password}@{hosts}/{settings.pg_database}"
        "?target_session_attrs=read-write"
        + pg_tls_query(local_tls(settings.run_path) if settings.tls else None, "&")
    )


def redis_url(settings: Settings, user: str = "default") -> str:
    """The configured URL, else the local stack's Redis as ``user`` (in TLS mode each
    component has its own)."""
    if settings.redis_url:
        return settings.redis_url
    return local_redis_url(
        settings.host, settings.redis_port, settings.run_path, user=user, tls=settings.tls
    )


def local_tls(run_dir: Path) -> TlsFiles:
    """The local stack's CA and certificate (TLS mode)."""
    return TlsFiles(run_dir / "tls")


def pg_tls_query(tls: TlsFiles | None, sep: str = "?") -> str:
    """libpq's TLS parameters for a URI to a local member ('' in plaintext mode)."""
    if tls is None:
        return ""
    return f"{sep}sslmode=verify-full&sslrootcert={tls.ca_cert}"


def local_redis_url(host: str, port: int, run_dir: Path, *, user: str, tls: bool) -> str:
    """The local stack's Redis (plaintext mode: no users, everyone is ``default``)."""
    if not tls:
        return f"redis://{host}:{port}/0"
    secret = devsecrets.read_or_create(devsecrets.redis_password_path(run_dir, user))
    password = quote(secret, safe="")
    ca = quote(str(local_tls(run_dir).ca_cert))
    return f"rediss://{user}:{password}@{host}:{port}/0?ssl_ca_certs={ca}"
