"""The FastAPI application: routes, error handlers, metrics, and the services' lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from leaderboard import __version__
from leaderboard.api import errors
from leaderboard.api.middleware import MetricsMiddleware
from leaderboard.api.routes import actions, health, leaderboard
from leaderboard.api.services import Services
from leaderboard.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await Services.start(settings)
        try:
            yield
        finally:
            await app.state.services.stop()

    app = FastAPI(
        title="leaderboard",
        version=__version__,
        summary="Real-time leaderboard: complete actions, read the ranking.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(MetricsMiddleware)
    for module in (actions, leaderboard, health):
        app.include_router(module.router)
    return app
