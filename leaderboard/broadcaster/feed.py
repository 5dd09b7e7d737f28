"""The broadcaster's link to Redis: subscribe to the updates, load the state, re-sync.

Order matters: subscribe first, then read the current state (the last published message and
its seq). A message published in between arrives through the subscription with a seq the hub
already has, and is dropped; none is missed. The same happens after every reconnect, so a
broadcaster that was cut off from Redis sends its clients a fresh snapshot.
"""

from __future__ import annotations

import logging
import random

import orjson
import redis.asyncio as aioredis

from leaderboard import supervise
from leaderboard.broadcaster import metrics
from leaderboard.broadcaster.hub import Hub
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.keys import Keys

log = logging.getLogger("leaderboard.broadcaster")


class Feed:
    """One subscription for the channels of every board the hub serves."""

    def __init__(self, client: aioredis.Redis, keys: Keys, hub: Hub) -> None:
        self.client = client
        self.keys = keys
        self.hub = hub
        self.ready = False
        self.channels = {keys.board(board).updates.encode(): board for board in hub.boards}

    async def load_state(self) -> None:
        for board in self.hub.boards:
            raw = await self.client.hget(self.keys.board(board).top10, "message")
            if raw is None:
                continue  # nothing published yet: clients get the empty snapshot
            message = orjson.loads(raw)
            season = int(message.get("season", 1))
            self.hub.resync(int(message["seq"]), message["top"], board, season)

    async def run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                await self.load_state()
                self.ready, delay = True, 0.1
                metrics.REDIS_UP.set(1)
                log.info(
                    "subscribed to %d boards, all-time at seq %d", len(self.channels), self.hub.seq
                )
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self.hub.publish(message["data"], self.channels[message["channel"]])
            except REDIS_ERRORS as exc:
                if self.ready:
                    log.warning("lost Redis (%s); clients keep the last state meanwhile", exc)
                self.ready = False
                metrics.REDIS_UP.set(0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await supervise.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, 5.0)
