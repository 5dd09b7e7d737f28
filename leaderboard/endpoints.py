"""Where the services find PostgreSQL and Redis: the configured URLs, or the local stack's."""

from __future__ import annotations

from leaderboard import devsecrets
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
    )


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"redis://{settings.host}:{settings.redis_port}/0"
