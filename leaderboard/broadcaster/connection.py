"""One client socket of the broadcaster: an asyncio protocol around websockets' Sans-I/O core.

websockets (the library) parses the handshake and the client's frames and answers pings and
closes correctly; this class does the I/O with no task and no buffer of its own, so an idle
connection costs one transport and a few small objects. The same port also answers plain HTTP
(the web page, health, metrics): :class:`Site` says what.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol as TypingProtocol
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from leaderboard.auth import Principal, TokenError
from leaderboard.boards import ALL_TIME
from leaderboard.broadcaster import metrics
from leaderboard.broadcaster.hub import CLOSE_TOKEN_EXPIRED, CLOSE_TRY_AGAIN, Hub
from leaderboard.errors import error_body

log = logging.getLogger("leaderboard.broadcaster")

WRITE_HIGH_WATER = 64 * 1024  # above this, a client is "unwritable": it gets no new frames
KERNEL_SEND_BUFFER = 64 * 1024  # per socket (Linux doubles it); loopback would autotune to MBs
_handshakes: set[asyncio.Future[None]] = set()


class Site(TypingProtocol):
    """What a connection needs from the server around it."""

    hub: Hub
    # A connection that has not completed its WebSocket handshake this long after it was
    # accepted is dropped, and so is one that does not answer our close within it.
    handshake_timeout_s: float
    # Origins whose pages may connect (empty: any); a browser always sends Origin.
    allowed_origins: frozenset[str]

    @property
    def anonymous_viewers(self) -> bool: ...

    async def principal(self, token: str) -> Principal: ...

    def http(self, path: str) -> tuple[int, str, bytes]: ...


def http_response(status: int, content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _error(status: int, code: str, message: str) -> Response:
    return http_response(status, "application/json", error_body(code, message))


class Connection(asyncio.Protocol):
    __slots__ = (
        "board",
        "closing",
        "deadline",
        "last_ping",
        "last_seen",
        "missed",
        "open",
        "paused_since",
        "site",
        "transport",
        "ws",
    )

    def __init__(self, site: Site) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.board = ALL_TIME
        self.ws = ServerProtocol(max_size=4096)  # clients have nothing to tell us
        self.open = False
        self.closing = False
        self.paused_since: float | None = None
        self.missed = False
        self.last_seen = self.last_ping = time.monotonic()
        self.deadline: asyncio.TimerHandle | None = None  # handshake, then close, then expiry

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert hasattr(transport, "write")  # uvloop's are not asyncio.Transport subclasses
        stream: asyncio.Transport = transport  # type: ignore[assignment]
        sock = stream.get_extra_info("socket")
        if sock is not None:  # bound what the kernel queues for a client that stops reading
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        stream.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.transport = stream
        self._set_deadline(self.site.handshake_timeout_s, self._handshake_overdue)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                pass  # pings, pongs and closes are answered by the protocol; data is ignored
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_deadline(None)
        if self.open:
            self.open = False
            self.site.hub.remove(self)
        self.transport = None

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()
        if self.open:
            self.site.hub.pause(self)

    def resume_writing(self) -> None:
        self.paused_since = None
        if self.open and self.site.hub.resume(self) and self.missed and self.transport:
            self.missed = False
            self.transport.write(self.site.hub.snapshot_frame(self.board))  # latest wins

    # -- used by the hub

    def ping(self, now: float) -> None:
        if self.open and not self.closing and self.transport and self.paused_since is None:
            self.last_ping = now
            self.ws.send_ping(b"")
            self._flush()

    def close(self, code: int, reason: str, *, force: bool = False) -> None:
        if self.transport is None:
            return
        if self.open and not self.closing:
            self.closing = True
            self.site.hub.stop_sending(self)
            self.ws.send_close(code, reason)
            self._flush()
            self._set_deadline(self.site.handshake_timeout_s, self.abort)  # or it never ends
        if force:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals

    def _set_deadline(self, delay: float | None, then: Callable[[], None] | None = None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if delay is not None and then is not None:
            self.deadline = asyncio.get_running_loop().call_later(delay, then)

    def _handshake_overdue(self) -> None:
        if not self.open:  # it never sent a (complete) request, or never read our answer
            metrics.REJECTED.labels("handshake_timeout").inc()
            self.abort()

    def _token_expired(self) -> None:
        metrics.REJECTED.labels("token_expired").inc()
        self.close(CLOSE_TOKEN_EXPIRED, "token expired")

    def _flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # the protocol asks to close the TCP connection (EOF)
                self.transport.close()
                return

    def _on_request(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        if path == "/ws":
            task = asyncio.ensure_future(self._upgrade(request, query))
            _handshakes.add(task)  # keep a reference until it is done
            task.add_done_callback(_handshakes.discard)
            return
        status, content_type, body = self.site.http(path)
        self.ws.send_response(http_response(status, content_type, body))

    async def _upgrade(self, request: Request, query: str) -> None:
        token = None
        expires = float("inf")
        params = parse_qs(query)
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif tokens := params.get("token"):
            token = tokens[0]
        rejection: Response | None = None
        self.board = params.get("board", [ALL_TIME])[0]
        origin = request.headers.get("Origin", "").rstrip("/").lower()
        allowed = self.site.allowed_origins
        if self.board not in self.site.hub.boards:
            rejection = _error(404, "unknown_board", f"there is no board {self.board[:100]!r}")
            metrics.REJECTED.labels("unknown_board").inc()
            self.board = ALL_TIME
        elif origin and allowed and origin not in allowed:
            rejection = _error(403, "forbidden", "this origin may not open a WebSocket here")
            metrics.REJECTED.labels("origin").inc()
        elif token:
            try:
                expires = (await self.site.principal(token)).expires
            except TokenError as exc:
                rejection = _error(401, exc.code, exc.message)
                metrics.REJECTED.labels(exc.code).inc()
        elif not self.site.anonymous_viewers:
            rejection = _error(401, "missing_token", "a token is required")
            metrics.REJECTED.labels("missing_token").inc()
        if self.transport is None or self.transport.is_closing():
            return  # the client left while we checked its token
        if rejection is not None:
            self.ws.send_response(rejection)
            self._flush()
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code != 101:
            metrics.REJECTED.labels("bad_handshake").inc()
            self._flush()
            return
        hub = self.site.hub
        if not hub.add(self):
            metrics.REJECTED.labels("full" if hub.accepting else "draining").inc()
            self.open = False
            self.ws.send_close(CLOSE_TRY_AGAIN, "broadcaster at capacity, retry another")
            self._flush()
            return
        self.open = True
        # A token checked at the handshake is good until its exp, not for the socket's life.
        if expires != float("inf"):
            self._set_deadline(max(0.0, expires - time.time()), self._token_expired)
        else:
            self._set_deadline(None)
        self._flush()  # the 101 response, then at once the snapshot
        self.transport.write(hub.snapshot_frame(self.board))
