"""The ceiling to beat for `make bench-ws`: the websockets library's own asyncio server and
its ``broadcast()``, fed from the same Redis channel, compression off (as ours)."""

from __future__ import annotations

import os
import resource

import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


async def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client = aioredis.Redis.from_url(os.environ["LEADERBOARD_REDIS_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("leaderboard:updates")
    port = int(os.environ["LEADERBOARD_WS_PORT"])
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=4096):
        async for message in pubsub.listen():
            broadcast(CONNECTIONS, message["data"].decode())


if __name__ == "__main__":
    uvloop.run(main())
