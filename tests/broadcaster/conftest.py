"""Broadcaster fixtures: real broadcasters (in this process, on uvloop) on real sockets, fed by
the session's real Redis through the real API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from leaderboard.broadcaster.server import Broadcaster
from leaderboard.config import Settings
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import api_settings
from tests.support import eventually, free_ports


@dataclass
class Running:
    broadcaster: Broadcaster
    settings: Settings

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.ws_port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.ws_port}"


@asynccontextmanager
async def running_broadcaster(stack: Stack, **overrides: Any) -> AsyncIterator[Running]:
    overrides.setdefault("ws_port", free_ports(1)[0])
    settings = api_settings(stack, **overrides)
    broadcaster = Broadcaster(settings)
    stopping = asyncio.Event()
    task = asyncio.create_task(broadcaster.serve(stopping))

    async def ready() -> bool:
        if task.done():
            task.result()  # raise what made it stop
        return broadcaster.feed.ready

    await eventually(ready, timeout=10)
    try:
        yield Running(broadcaster, settings)
    finally:
        stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


@pytest_asyncio.fixture
async def broadcaster(stack: Stack) -> AsyncIterator[Running]:
    async with running_broadcaster(stack) as running:
        yield running


class Viewer:
    """A WebSocket client that records every message it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.messages.append(json.loads(raw))

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5
    ) -> list[dict[str, Any]]:
        async def check() -> bool:
            return predicate(self.messages)

        await eventually(check, timeout=timeout)
        return self.messages

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


@asynccontextmanager
async def viewer(url: str, **kwargs: Any) -> AsyncIterator[Viewer]:
    async with connect(url, **kwargs) as ws:
        v = Viewer(ws)
        try:
            yield v
        finally:
            v.task.cancel()


Wait = Callable[[], Awaitable[bool]]
