"""``leaderboard api``: serve the API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import uvicorn

from leaderboard.config import Settings


def serve(settings: Settings, host: str | None = None) -> None:
    uvicorn.run(
        "leaderboard.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=settings.api_port,
        workers=settings.api_workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the metrics count every request; a log line each costs ~10%
        timeout_graceful_shutdown=20,
        proxy_headers=False,  # nothing uses the client address; saves a middleware per request
        server_header=False,
        log_level="info",
    )
