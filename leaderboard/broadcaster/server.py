"""``leaderboard broadcaster``: the WebSocket fan-out service on one port.

``GET /ws`` (WebSocket, token in ``Authorization`` or ``?token=``, board in ``?board=``),
``GET /`` (the live page), ``/boards`` (the boards it serves, for the page's picker),
``/healthz``, ``/readyz`` (subscribed to Redis), ``/metrics``. SIGTERM: stop accepting, close
every client with 1001 so it reconnects elsewhere, wait up to ``ws_drain_s``, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
from importlib import resources

import orjson
import redis.asyncio as aioredis
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leaderboard import connection_urls, supervise
from leaderboard.auth import Principal, Verifier
from leaderboard.broadcaster import metrics
from leaderboard.broadcaster.connection import Connection
from leaderboard.broadcaster.feed import Feed
from leaderboard.broadcaster.hub import Hub
from leaderboard.cache.keys import Keys
from leaderboard.catalog import load_catalog
from leaderboard.config import Settings

log = logging.getLogger("leaderboard.broadcaster")


class Broadcaster:
    """The running service: what :class:`Connection` calls its ``Site``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The boards are the catalog's: the broadcaster reads the same file as the API.
        self.boards = load_catalog(settings.catalog_path).boards
        self.boards_body = orjson.dumps(
            {"boards": [{"id": b.id, "title": b.title} for b in self.boards.values()]}
        )
        self.hub = Hub(
            max_connections=settings.ws_max_connections,
            ping_interval_s=settings.ws_ping_interval_s,
            ping_timeout_s=settings.ws_ping_timeout_s,
            slow_client_s=settings.ws_slow_client_s,
            boards=list(self.boards),
        )
        self.verifier = Verifier(settings)
        self.handshake_timeout_s = settings.ws_handshake_timeout_s
        self.allowed_origins = settings.allowed_origins
        self.client = aioredis.Redis.from_url(
            connection_urls.redis_url(settings, "broadcaster"),
            socket_connect_timeout=settings.redis_timeout_s,
        )
        self.feed = Feed(self.client, Keys(settings.redis_prefix), self.hub)
        self.page = (
            resources.files("leaderboard.broadcaster") / "static" / "index.html"
        ).read_bytes()
        metrics.MAX_CONNECTIONS.set(settings.ws_max_connections)

    @property
    def anonymous_viewers(self) -> bool:
        return self.settings.anonymous_viewers

    async def principal(self, token: str) -> Principal:
        return await self.verifier.principal(token)

    def http(self, path: str) -> tuple[int, str, bytes]:
        if path == "/":
            return 200, "text/html; charset=utf-8", self.page
        if path == "/boards":
            return 200, "application/json", self.boards_body
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            if self.feed.ready and self.hub.accepting:
                return 200, "application/json", b'{"status":"ready"}'
            return 503, "application/json", b'{"status":"unavailable"}'
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        return 404, "application/json", b'{"error":{"code":"not_found","message":"no such path"}}'

    async def serve(self, stopping: asyncio.Event | None = None) -> None:
        """Serve until ``stopping`` is set (by default: until SIGINT or SIGTERM)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.ws_port))
        server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=4096)
        if stopping is None:
            stopping = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopping.set)
        tasks = [
            supervise.start("broadcaster-feed", self.feed.run),
            supervise.start("broadcaster-heartbeat", self.hub.heartbeat),
        ]
        log.info("broadcaster listening on %s:%d", self.settings.host, self.settings.ws_port)
        try:
            await stopping.wait()
            log.info("draining %d clients", len(self.hub.connections))
            server.close()  # stop accepting first
            await self.hub.drain(self.settings.ws_drain_s)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            server.close()
            await self.client.aclose()
        log.info("broadcaster stopped")


def serve(settings: Settings) -> None:
    # Every client is a file descriptor: take all the process may have (soft := hard limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per HTTP request else
    uvloop.run(Broadcaster(settings).serve())
