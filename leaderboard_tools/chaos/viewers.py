"""The campaign's other clients: WebSocket viewers, and a client writing straight to the
primary of the moment (not through the API), as a pod on the old primary's node would.

Viewers behave as the web page does: take the snapshot, apply each top-10 message, and on a
dropped connection reconnect with backoff (the snapshot re-syncs them). At the end every one
must be at the broadcaster's last seq with its top 10.

The direct writer is the client a partition cannot cut from the old primary: it inserts into
a table of its own on the member the operator last recorded as primary, so an old primary
that kept accepting writes after a promotion (split brain) shows up as an acknowledged row
missing from the final primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import websockets

from leaderboard_tools.chaos.world import World

DIRECT_CREATE = "CREATE TABLE IF NOT EXISTS chaos_direct (id bigint PRIMARY KEY)"
DIRECT_INSERT = "INSERT INTO chaos_direct VALUES ($1)"
DIRECT_IDS = "SELECT id FROM chaos_direct"


@dataclass
class Viewer:
    seq: int = -1
    top: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    gaps: int = 0  # a top10 whose seq was not the next one (resynced on reconnect)


class Viewers:
    def __init__(self, ws_url: str, count: int) -> None:
        self.ws_url = ws_url
        self.viewers = [Viewer() for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    async def _watch(self, viewer: Viewer) -> None:
        backoff = 0.2
        while True:
            try:
                async with websockets.connect(self.ws_url, open_timeout=3) as ws:
                    viewer.connects += 1
                    backoff = 0.2
                    async for raw in ws:
                        message = json.loads(raw)
                        seq = int(message["seq"])
                        if message["type"] == "top10" and viewer.seq >= 0 and seq != viewer.seq + 1:
                            viewer.gaps += 1
                        viewer.seq, viewer.top = seq, message["top"]
            except (OSError, TimeoutError, websockets.WebSocketException, ValueError):
                pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def __aenter__(self) -> Viewers:
        self._tasks = [asyncio.create_task(self._watch(v)) for v in self.viewers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def snapshot(ws_url: str) -> dict[str, Any]:
    """What a viewer connecting now is told first."""
    async with websockets.connect(ws_url, open_timeout=3) as ws:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=3))
        return message


class DirectWriter:
    """Inserts ids, one at a time, on the member recorded as primary when each is sent."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.acks: list[tuple[int, str, float]] = []  # (id, member, acknowledged)
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    async def prepare(self) -> None:
        conn = await self._connect(self.world.recorded_primary())
        try:
            await conn.execute(DIRECT_CREATE)
        finally:
            await conn.close()

    async def _connect(self, name: str) -> asyncpg.Connection:
        member = self.world.member(name)
        return await member.connect(self.world.cluster.superuser_password, timeout=1.0)

    async def _run(self) -> None:
        n = 0
        target = ""
        while True:
            n += 1
            try:
                if self._conn is None:  # kept until it fails, like a client's pooled connection
                    target = self.world.recorded_primary()
                    self._conn = await self._connect(target)
                await self._conn.execute(DIRECT_INSERT, n, timeout=1.0)
                self.acks.append((n, target, time.time()))
            except Exception:  # refused, cut, timed out, demoted, mid-failover: not acked
                self._drop()
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.02)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None

    async def __aenter__(self) -> DirectWriter:
        await self.prepare()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop()
