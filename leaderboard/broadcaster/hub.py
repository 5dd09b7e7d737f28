"""The hub: every open WebSocket of this process, each board's current top 10, and the fan-out.

Each client watches one board (``?board=``, default the all-time one); each board has its own
seq, snapshot and set of writable transports, so a board's update goes to its viewers only.

Fan-out does as little per connection as possible: a message is framed once (its JSON comes
from Redis as published, never re-serialised) and the same bytes are handed to each
connection's transport, with no task, no await and no copy per client. There is no
backpressure on the publisher; instead each connection is handled by what its transport says:

- writable: the frame is written (the kernel or the transport buffer takes it);
- above the write buffer's high-water mark (``pause_writing``): nothing more is queued for it.
  It only remembers that it missed updates; when it drains (``resume_writing``) it receives one
  snapshot of the *current* top 10 (latest wins), so a slow client holds at most one pending
  update's worth of memory beyond its buffer;
- unwritable for longer than ``slow_client_s``: closed with code 4008 (see CLOSE_SLOW).

Heartbeats: one task pings every client each ``ping_interval_s`` and drops those silent for
longer than interval + timeout (dead peers), so no per-connection timer exists either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import orjson
from websockets.frames import Frame, Opcode

from leaderboard import supervise
from leaderboard.boards import ALL_TIME
from leaderboard.broadcaster import metrics

log = logging.getLogger("leaderboard.broadcaster")

CLOSE_GOING_AWAY = 1001  # SIGTERM: reconnect to another broadcaster
CLOSE_TRY_AGAIN = 1013  # this broadcaster is at its connection limit
CLOSE_SLOW = 4008  # the client did not read its updates for ws_slow_client_s
CLOSE_TOKEN_EXPIRED = 4001  # the token the socket was opened with has expired: reconnect
PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)


class Client(Protocol):
    """What the hub needs of a WebSocket connection (``connection.Connection`` is one): the
    hub only hands frames to transports and asks connections to ping or close, so it never
    imports the connection module, which imports the hub."""

    transport: asyncio.Transport | None
    board: str  # the board it watches
    closing: bool
    missed: bool  # a frame went past it while it was paused: it gets a snapshot on resume
    paused_since: float | None
    last_seen: float
    last_ping: float

    def ping(self, now: float) -> None: ...

    def close(self, code: int, reason: str, *, force: bool = False) -> None: ...

    def abort(self) -> None: ...


def text_frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class BoardState:
    """One board as this broadcaster has it: last seq, season, top 10, its snapshot frame,
    and the transports of its viewers that take frames right now."""

    def __init__(self, board: str) -> None:
        self.board = board
        self.seq = 0
        self.season = 1
        self.top: list[Any] = []
        # The fan-out loop touches nothing but this: one C-level write per client.
        self.writable: dict[Client, asyncio.Transport] = {}
        self.snapshot_frame = self._snapshot()

    def _snapshot(self) -> bytes:
        return text_frame(
            orjson.dumps(
                {
                    "type": "snapshot",
                    "seq": self.seq,
                    "board": self.board,
                    "season": self.season,
                    "top": self.top,
                }
            )
        )

    def adopt(self, seq: int, season: int, top: list[Any]) -> None:
        self.seq, self.season, self.top = seq, season, top
        self.snapshot_frame = self._snapshot()


class Hub:
    def __init__(
        self,
        *,
        max_connections: int,
        ping_interval_s: float,
        ping_timeout_s: float,
        slow_client_s: float,
        boards: list[str] | None = None,
    ) -> None:
        self.connections: set[Client] = set()
        self.boards = {b: BoardState(b) for b in boards or [ALL_TIME]}
        self.paused: set[Client] = set()
        self.max_connections = max_connections
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.slow_client_s = slow_client_s
        self.accepting = True
        self._emptied: asyncio.Event | None = None

    @property
    def seq(self) -> int:
        """The all-time board's seq."""
        return self.boards[ALL_TIME].seq

    def snapshot_frame(self, board: str) -> bytes:
        return self.boards[board].snapshot_frame

    # -- state

    def resync(self, seq: int, top: list[Any], board: str = ALL_TIME, season: int = 1) -> None:
        """Adopt the state read from Redis; if it is newer than what clients have, send them
        a fresh snapshot (we may have missed messages while Redis was away)."""
        state = self.boards[board]
        if seq < state.seq:
            return  # never go back in seq
        changed = seq > state.seq
        state.adopt(seq, season, top)
        if changed and state.writable:
            metrics.RESYNCS.inc()
            self.fan_out(state.snapshot_frame, board)

    def publish(self, payload: bytes, board: str = ALL_TIME) -> None:
        """A message from a board's updates channel: fan it out if it is the next one."""
        received = time.perf_counter()
        state = self.boards[board]
        try:
            message = orjson.loads(payload)
            seq, top = int(message["seq"]), message["top"]
            season = int(message.get("season", 1))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("ignoring a malformed update: %.200r", payload)
            return
        if seq <= state.seq:
            return  # a duplicate or an old message: never send a lower seq
        contiguous = seq == state.seq + 1
        state.adopt(seq, season, top)
        # After a gap, clients get the state as a snapshot rather than an update they
        # would see as a gap (and re-sync for).
        self.fan_out(text_frame(payload) if contiguous else state.snapshot_frame, board)
        metrics.FANOUT_SECONDS.observe(time.perf_counter() - received)

    # -- connections

    def add(self, conn: Client) -> bool:
        if not self.accepting or len(self.connections) >= self.max_connections:
            return False
        assert conn.transport is not None
        self.connections.add(conn)
        self.boards[conn.board].writable[conn] = conn.transport
        metrics.CONNECTIONS.set(len(self.connections))
        return True

    def pause(self, conn: Client) -> None:
        """``conn`` is above its write buffer's high-water mark: send it nothing more."""
        if self.boards[conn.board].writable.pop(conn, None) is not None:
            self.paused.add(conn)

    def resume(self, conn: Client) -> bool:
        """``conn`` drained; True if it should be sent the current snapshot (it missed some)."""
        if conn not in self.paused:
            return False
        self.paused.discard(conn)
        if conn.transport is not None and not conn.closing:
            self.boards[conn.board].writable[conn] = conn.transport
        return True

    def stop_sending(self, conn: Client) -> None:
        self.boards[conn.board].writable.pop(conn, None)
        self.paused.discard(conn)

    def remove(self, conn: Client) -> None:
        self.stop_sending(conn)
        self.connections.discard(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    def fan_out(self, frame: bytes, board: str = ALL_TIME) -> None:
        # A copy: a write can call pause_writing() at once, which edits the writable set.
        transports = list(self.boards[board].writable.values())
        for transport in transports:
            transport.write(frame)
        for conn in self.paused:
            if conn.board == board:
                conn.missed = True  # it gets the latest state as a snapshot when it drains
        metrics.MESSAGES_SENT.inc(len(transports))
        metrics.BYTES_SENT.inc(len(transports) * len(frame))

    # -- housekeeping

    async def heartbeat(self) -> None:
        """Ping everyone; drop dead peers and clients that stay unwritable."""
        while True:
            await supervise.sleep(min(self.ping_interval_s, self.slow_client_s) / 2)
            now = time.monotonic()
            for conn in list(self.connections):
                paused_since = conn.paused_since
                if paused_since is not None and now - paused_since > self.slow_client_s:
                    metrics.SLOW_CLIENTS_CLOSED.inc()
                    conn.close(CLOSE_SLOW, "too slow to read updates", force=True)
                elif now - conn.last_seen > self.ping_interval_s + self.ping_timeout_s:
                    metrics.DEAD_PEERS.inc()
                    conn.abort()
                elif now - conn.last_ping >= self.ping_interval_s:
                    conn.ping(now)

    async def drain(self, timeout: float) -> None:
        """Close every client with 1001 (go elsewhere) and wait for them, up to ``timeout``."""
        self.accepting = False
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        self._emptied = asyncio.Event()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), timeout)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn.abort()
