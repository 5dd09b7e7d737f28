"""The connection pool to the PostgreSQL primary, with bounded waits and failover handling.

Every call is bounded by ``timeout`` (acquire and query), so a dead or hung primary costs a
request at most that long and never parks a worker. Errors that mean "the primary is not
there" become :class:`DatabaseUnavailable` (the API answers 503).

After a failover, pooled connections may still point at the demoted primary. asyncpg checks
``target_session_attrs=read-write`` only when connecting, so a write on such a connection
fails with ``ReadOnlySQLTransactionError``; we then expire the whole pool, and the next
connections (multi-host DSN or a Service that moved) find the new primary by themselves
(:mod:`leaderboard.db.hosts`: a host that drops packets does not hide the others).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from leaderboard.db.hosts import PrimaryConnector

log = logging.getLogger("leaderboard.db")

# The server is gone, going, starting, read-only, or unreachable: try again later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.TargetServerAttributeNotMatched,  # no host of the DSN is a writable primary
    # Seen only during failovers: a connection opened while the primary changed comes back
    # mid-operation ("cannot switch to state 12"). It is discarded like any broken one.
    asyncpg.InternalClientError,
)
# The server answers but is not (or no longer) the primary: our connections are stale.
_NOT_PRIMARY: tuple[type[BaseException], ...] = (
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release (a round trip per request): the API never
    changes session state (no SET, LISTEN, advisory locks or cursors on pooled connections),
    and :meth:`Database.connection` terminates any connection a call failed on."""


def _discard(conn: asyncpg.pool.PoolConnectionProxy) -> None:
    # A connection that died mid-query was already detached from its proxy by the pool.
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


class DatabaseUnavailable(Exception):
    pass


class Database:
    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    @classmethod
    async def open(cls, dsn: str, *, min_size: int, max_size: int, timeout: float) -> Database:
        pool = await asyncpg.create_pool(
            dsn,
            connect=PrimaryConnector(dsn),  # each host its own deadline (see db.hosts)
            min_size=min(min_size, max_size),
            max_size=max_size,
            timeout=timeout,  # connect
            command_timeout=timeout,
            max_inactive_connection_lifetime=120,
            reset=_keep_session,
            server_settings={"application_name": "leaderboard-api"},
        )
        return cls(pool, timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                try:
                    yield conn
                except (asyncpg.PostgresError, asyncpg.InternalClientError) as exc:
                    if isinstance(exc, _UNAVAILABLE + _NOT_PRIMARY):
                        _discard(conn)
                    raise  # an ordinary SQL error: the connection is fine
                except BaseException:
                    # Timed out, cancelled or cut mid-query: the protocol may still be busy.
                    # We skip asyncpg's reset query, so never hand such a connection back.
                    _discard(conn)
                    raise
        except _NOT_PRIMARY as exc:
            log.warning("database is not a writable primary (%s); reconnecting", exc)
            await self.pool.expire_connections()
            raise DatabaseUnavailable("the database primary is read-only or shutting down") from exc
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(
                f"the database is unreachable ({type(exc).__name__})"
            ) from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args, timeout=self.timeout)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args, timeout=self.timeout)

    async def ping(self) -> bool:
        """True if a writable primary answers (readiness)."""
        try:
            async with self.connection() as conn:
                return not await conn.fetchval("SELECT pg_is_in_recovery()", timeout=self.timeout)
        except DatabaseUnavailable:
            return False
