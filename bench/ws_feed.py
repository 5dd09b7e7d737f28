"""What the benchmark's reference servers share with each other and with its client processes:
the file-descriptor limit raised to the hard limit, and the updates from the Redis channel."""

from __future__ import annotations

import os
import resource
from collections.abc import AsyncIterator

import redis.asyncio as aioredis


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def port() -> int:
    return int(os.environ["LEADERBOARD_WS_PORT"])


async def updates() -> AsyncIterator[bytes]:
    """Every message on ``leaderboard:updates`` of ``LEADERBOARD_REDIS_URL``."""
    client = aioredis.Redis.from_url(os.environ["LEADERBOARD_REDIS_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("leaderboard:updates")
    async for message in pubsub.listen():
        yield message["data"]
