"""The lean WebSocket viewers of `make bench-ws`: an asyncio protocol that parses unmasked
server frames, records (seq, arrival time) of each and answers pings, so the client side costs
as little CPU as possible on this 2-core machine."""

from __future__ import annotations

import asyncio
import re
import time
from multiprocessing.connection import Connection as Pipe

from bench.ws_feed import raise_fd_limit

SEQ = re.compile(rb'"seq":(\d+)')
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PONG = b"\x8a\x80\x00\x00\x00\x00"  # masked (zero key), empty payload


class Client(asyncio.Protocol):
    """Records (seq, arrival time) of every text frame; answers pings."""

    def __init__(self, received: list[tuple[int, float]], first: asyncio.Future[None]) -> None:
        self.received = received
        self.first = first
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(HANDSHAKE)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer + data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(buf[:80])
            self.open, buf = True, buf[end + 4 :]
            self.first.set_result(None)  # connected (the bare server sends no snapshot)
        while len(buf) >= 2:
            opcode, length, header = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, header = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, header = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < header + length:
                break
            payload, buf = buf[header : header + length], buf[header + length :]
            if opcode == 1:
                match = SEQ.search(payload)
                if match:
                    self.received.append((int(match.group(1)), now))
            elif opcode == 9 and self.transport is not None:
                self.transport.write(PONG)
        self.buffer = buf


def client_process(port: int, count: int, pipe: Pipe) -> None:
    raise_fd_limit()
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        received: list[tuple[int, float]] = []
        started = time.monotonic()
        firsts: list[asyncio.Future[None]] = []
        for batch in range(0, count, 250):  # the listen backlog is finite: open in waves
            waves = []
            for _ in range(min(250, count - batch)):
                first: asyncio.Future[None] = loop.create_future()
                firsts.append(first)
                waves.append(
                    loop.create_connection(lambda f=first: Client(received, f), "127.0.0.1", port)
                )
            await asyncio.gather(*waves)
        await asyncio.gather(*firsts)
        pipe.send(("connected", time.monotonic() - started))
        await loop.run_in_executor(None, pipe.recv)  # "stop"
        pipe.send(("received", received))

    uvloop.run(main())
