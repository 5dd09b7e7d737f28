"""Whether the Redis ranking holds exactly PostgreSQL's scores: the end check of the chaos
campaign and of the restore drill."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from leaderboard.cache.keys import Keys
from leaderboard.cache.ranking import encode
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.stack import Stack


def ranking_diff(redis: dict[str, int], postgres: dict[str, int], limit: int = 5) -> list[str]:
    """Users whose composite score (score and tie order) differs, at most ``limit`` named."""
    users = sorted(set(redis) | set(postgres))
    wrong = [u for u in users if redis.get(u) != postgres.get(u)]
    return [f"{u}: redis {redis.get(u)} postgres {postgres.get(u)}" for u in wrong[:limit]] + (
        [f"... and {len(wrong) - limit} more"] if len(wrong) > limit else []
    )


async def ranking_converges(
    stack: Stack, member: Member, bound_s: float
) -> tuple[list[str], float]:
    """Poll until Redis's all-time ranking equals ``member``'s scores (of users not banned) or
    ``bound_s`` passes;
    the differences left (empty: equal) and the seconds it took."""
    client = aioredis.from_url(stack.redis.url)
    conn = await asyncpg.connect(stack.database_url(member), timeout=10)
    started = time.monotonic()
    try:
        while True:
            rows = await conn.fetch(
                "SELECT user_id, score, reached_seq FROM scores WHERE NOT banned"
            )
            postgres = {r["user_id"]: encode(r["score"], r["reached_seq"]) for r in rows}
            flat: list[Any] = await client.zrange(
                Keys(stack.layout.redis_prefix).scores, 0, -1, withscores=True
            )
            redis = {_text(m): int(s) for m, s in flat}
            diff = ranking_diff(redis, postgres)
            if not diff or time.monotonic() - started > bound_s:
                return diff, time.monotonic() - started
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
        await client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
