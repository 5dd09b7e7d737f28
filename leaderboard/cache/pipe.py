"""One multiplexed Redis connection for the request hot path.

Why not redis-py here: measured on this machine, one command through redis-py's asyncio pool
costs about 120 µs of CPU (coredis ~155 µs, valkey-glide ~160 µs), which made the two Redis
calls of a completion cost more than the PostgreSQL transaction. Redis answers the commands of
a connection in order, so concurrent requests can share one connection: each writes its
command and appends a future; replies resolve the futures first-in, first-out. Parsing is
hiredis's (the parser redis-py itself uses). The rest of the code (pub/sub, rebuilds, admin)
keeps using redis-py; errors raised here are redis-py's exception classes, so callers handle
both the same way.

Commands issued during one turn of the event loop are written together (automatic
pipelining): under load, one send() carries the commands of many requests.

The URL follows redis-py's conventions (``rediss://`` for TLS, ``ssl_cert_reqs``,
``ssl_ca_certs``, ``ssl_certfile``/``ssl_keyfile``, ``ssl_check_hostname`` in the query, user and
password in the authority), parsed and turned into an SSL context by redis-py itself, so one URL
means the same connection on every path.

Timeouts: a watchdog looks at the oldest outstanding command. Replies are ordered, so if the
oldest is overdue the connection is stuck: every waiter fails with ``TimeoutError`` and the
connection is dropped; the next command reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rex
from redis._parsers.base import BaseParser
from redis.asyncio.connection import SSLConnection, parse_url

from leaderboard import supervise

Arg = str | bytes | int | float


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance checks here.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.pipe._waiters
        while (reply := self.reader.gets()) is not False:
            future, _ = waiters.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                # redis-py's own classes (NoScriptError, AuthenticationError, NoPermissionError..)
                future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe._lost(rex.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))


class RedisPipe:
    def __init__(self, url: str, *, timeout: float) -> None:
        options = parse_url(url)  # ValueError for a bad URL, as redis-py's clients raise
        if "path" in options:
            raise ValueError(
                "unix:// Redis URLs are not supported here (use redis:// or rediss://)"
            )
        self.host = options.get("host") or "127.0.0.1"
        self.port = int(options.get("port") or 6379)
        self.db = int(options.get("db") or 0)
        self.username = options.get("username")
        self.password = options.get("password")
        self.ssl = tls_context(url)
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def execute(self, *args: Arg) -> Any:
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        return await self._send(args)

    def _send(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters.append((future, time.monotonic()))
        # Commands issued during one turn of the event loop leave in one write (one syscall).
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        return future

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None and not self._transport.is_closing():
                return
            loop = asyncio.get_running_loop()
            try:
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Protocol(self),
                        self.host,
                        self.port,
                        ssl=self.ssl,
                        server_hostname=self.host if self.ssl is not None else None,
                    ),
                    self.timeout,
                )
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                raise rex.ConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc!r}"
                ) from exc
            self._transport = transport
            handshake = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                handshake.append(self._send(("AUTH", *auth)))
            if self.db:
                handshake.append(self._send(("SELECT", self.db)))
            if handshake:
                try:
                    await asyncio.gather(*handshake)
                except rex.RedisError:
                    transport.close()
                    raise
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = asyncio.create_task(self._watch(), name="redis-pipe-watchdog")

    def _lost(self, error: Exception) -> None:
        self._transport = None
        self._outgoing = []
        while self._waiters:
            future, _ = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    async def _watch(self) -> None:
        interval = min(self.timeout / 4, 0.1)
        while self._transport is not None:
            await supervise.sleep(interval)
            if self._waiters and time.monotonic() - self._waiters[0][1] > self.timeout:
                transport = self._transport
                self._lost(rex.TimeoutError(f"Redis did not answer within {self.timeout} s"))
                if transport is not None:
                    transport.abort()

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._lost(rex.ConnectionError("closed"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog

    def script(self, source: str) -> PipeScript:
        return PipeScript(self, source)


def tls_context(url: str) -> ssl.SSLContext | None:
    """The SSL context redis-py would use for ``url`` (None for plain ``redis://``)."""
    options: dict[str, Any] = dict(parse_url(url))
    if options.get("connection_class") is not SSLConnection:
        return None
    ssl_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    return SSLConnection(**ssl_options).ssl_context.get()


class PipeScript:
    """Call-compatible with redis-py's ``AsyncScript``: EVALSHA, loading it on NOSCRIPT."""

    def __init__(self, pipe: RedisPipe, source: str) -> None:
        self.pipe = pipe
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.pipe.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            await self.pipe.execute("SCRIPT", "LOAD", self.source)
            return await self.pipe.execute("EVALSHA", self.sha, len(keys), *keys, *args)
