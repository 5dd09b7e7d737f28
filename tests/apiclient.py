"""The API driven in-process over ASGI (lifespan and all), and its fixtures (registered in
tests/conftest.py so every folder shares one session instance)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from leaderboard import auth
from leaderboard.api.app import create_app
from leaderboard.api.services import Services
from leaderboard.catalog import default_catalog_text
from leaderboard.config import Settings
from leaderboard.db import scores
from leaderboard_tools.devstack.stack import Stack


def api_settings(stack: Stack, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "run_dir": stack.run_dir,
        "database_url": stack.services_database_url(),
        "redis_url": stack.redis.url,
        "top_cache_ms": 0,
        "db_startup_timeout_s": 10,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def token(self, user_id: str, ttl: float = 600) -> str:
        return auth.mint(self.settings, user_id, ttl=ttl)

    def headers(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    async def complete(
        self, user_id: str, action_id: str, data: dict[str, Any] | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"actionId": action_id}
        if data is not None:
            body["data"] = data
        return await self.client.post(
            "/api/action/complete", json=body, headers=self.headers(user_id)
        )


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, settings)


@pytest_asyncio.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with running_api(api_settings(stack)) as running:
        yield running


@pytest.fixture
def new_user() -> Callable[[], str]:
    """Unique user ids, so tests sharing the cluster never collide."""
    return lambda: f"u-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def empty_board(api: Api, stack: Stack) -> Api:
    """No scores anywhere (every board), and ready (empty) rankings in Redis."""
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        await conn.execute("TRUNCATE scores, completions, board_scores")
    finally:
        await conn.close()
    ranking = api.services.leaderboard.ranking
    for board in api.services.catalog.boards:
        keys = ranking.keys.board(board)
        await api.services.redis.delete(keys.scores, keys.top10)
        season = await scores.current_season(api.services.db, board)
        assert season is not None
        assert await ranking.rebuild(board, season, _no_batches) == "done"
    return api


async def _no_batches() -> AsyncIterator[list[tuple[str, int, int]]]:
    for batch in ():
        yield batch


@pytest_asyncio.fixture(scope="session")
async def unlimited(api: Api, stack: Stack) -> AsyncIterator[Api]:
    """A second API process-alike with no practical rate limit and 50 extra 7-point actions,
    for concurrency tests that need one user to send many requests at once.

    Its catalog is a superset of the default one, and it starts after ``api``, so the
    catalog upsert (which deactivates unlisted actions) leaves both usable."""
    extra = "".join(
        f"  - id: bulk-{i:02d}\n    title: Bulk action {i}\n    points: 7\n" for i in range(50)
    )
    path = stack.run_dir / "catalog-unlimited.yaml"
    path.write_text(default_catalog_text().rstrip() + "\n\n" + extra)
    async with running_api(api_settings(stack, rate_limit=1000, catalog_path=path)) as running:
        yield running
