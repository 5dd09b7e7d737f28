"""The ceiling to beat for `make bench-ws`: the websockets library's own asyncio server and
its ``broadcast()``, fed from the same Redis channel, compression off (as ours)."""

from __future__ import annotations

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.ws_feed import port, raise_fd_limit, updates

CONNECTIONS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


async def main() -> None:
    raise_fd_limit()
    async with serve(handler, "127.0.0.1", port(), compression=None, backlog=4096):
        async for message in updates():
            broadcast(CONNECTIONS, message.decode())


if __name__ == "__main__":
    uvloop.run(main())
