"""What the API holds while it runs: pools, clients, catalog. Opened in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from leaderboard import connection_urls
from leaderboard.auth import Verifier
from leaderboard.boards import declare_boards
from leaderboard.cache.keys import Keys
from leaderboard.cache.pipe import RedisPipe
from leaderboard.cache.ranking import MAX_SCORE
from leaderboard.catalog import Catalog, CatalogError, upsert_catalog
from leaderboard.config import Settings
from leaderboard.db.hosts import connect_primary
from leaderboard.db.migrate import migrate
from leaderboard.db.pool import Database
from leaderboard.moderation import Moderation
from leaderboard.service import Leaderboard

log = logging.getLogger("leaderboard.api")


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    db: Database
    redis: aioredis.Redis
    pipe: RedisPipe
    verifier: Verifier
    leaderboard: Leaderboard
    moderation: Moderation

    @classmethod
    async def start(cls, settings: Settings, catalog: Catalog) -> Services:
        if catalog.max_total_points > MAX_SCORE:
            raise CatalogError(
                f"the catalog allows {catalog.max_total_points} points per user; the ranking is "
                f"exact up to {MAX_SCORE}"
            )
        dsn = connection_urls.database_url(settings)
        await _prepare_database(dsn, catalog, settings.db_startup_timeout_s)
        db = await Database.open(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout=settings.db_timeout_s,
        )
        client = aioredis.Redis.from_url(
            connection_urls.redis_url(settings, "api"),
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            max_connections=256,
        )
        pipe = RedisPipe(
            connection_urls.redis_url(settings, "api"), timeout=settings.redis_timeout_s
        )
        board = Leaderboard(
            db,
            client,
            pipe,
            Keys(settings.redis_prefix),
            catalog,
            rate_limit=settings.rate_limit,
            rate_window_s=settings.rate_window_s,
            top_cache_s=settings.top_cache_ms / 1000,
            around=settings.around,
            award_batches=settings.db_award_batches,
            reconcile_interval_s=settings.reconcile_interval_s,
            reconcile_lag_s=settings.reconcile_lag_s,
            write_hold_s=settings.db_write_hold_s,
        )
        await board.start()
        # An erasure waits for statements older than its block: at most one statement's time.
        moderation = Moderation(board, settle_s=2 * settings.db_timeout_s)
        return cls(settings, catalog, db, client, pipe, Verifier(settings), board, moderation)

    async def stop(self) -> None:
        await self.leaderboard.stop()
        await self.pipe.close()
        await self.redis.aclose()
        await self.db.close()


async def _prepare_database(dsn: str, catalog: Catalog, timeout_s: float) -> None:
    """Wait for a writable primary, then migrate and upsert the catalog (idempotent, locked)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await connect_primary(dsn, timeout=5)
            break
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no writable PostgreSQL primary within {timeout_s:.0f} s"
                ) from exc
            log.info("waiting for PostgreSQL: %s", exc)
            await asyncio.sleep(0.5)
    try:
        applied = await migrate(conn)
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        await declare_boards(conn, catalog.seasonal)  # before the actions: repeat_board refers
        await upsert_catalog(conn, catalog)
    finally:
        await conn.close()
