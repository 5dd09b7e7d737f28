"""The floor for `make bench-ws`: the least a Python server can do per client. It answers the
WebSocket handshake and, for each message from the Redis channel, frames it once and makes one
``transport.write`` per connection (uvloop): no library, no checks, no state. What remains is
the kernel's cost of a 1 KB send on loopback, which no server in Python can go below."""

from __future__ import annotations

import asyncio

import uvloop
from websockets.frames import Frame, Opcode
from websockets.utils import accept_key

from bench.ws_feed import port, raise_fd_limit, updates

TRANSPORTS: set[asyncio.Transport] = set()


class Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport in TRANSPORTS:
            return  # pongs and the like: ignored
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        keys = [
            line.split(b":", 1)[1].strip()
            for line in self.buffer.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ]
        if not keys:  # not a WebSocket handshake (the benchmark asks every server /metrics)
            self.transport.close()
            return
        key = keys[0]
        accept = accept_key(key.decode()).encode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        TRANSPORTS.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            TRANSPORTS.discard(self.transport)


async def main() -> None:
    raise_fd_limit()
    await asyncio.get_running_loop().create_server(Raw, "127.0.0.1", port(), backlog=4096)
    async for message in updates():
        frame = Frame(Opcode.TEXT, message).serialize(mask=False)
        for transport in list(TRANSPORTS):
            transport.write(frame)


if __name__ == "__main__":
    uvloop.run(main())
