"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leaderboard.api.deps import ServicesDep
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.metrics import POOL_IDLE, POOL_SIZE

router = APIRouter()


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    """The process is alive (no dependency checked: a restart would not fix them)."""
    return _json({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(svc: ServicesDep) -> Response:
    """Ready when a writable PostgreSQL primary and Redis answer."""

    async def redis_ok() -> bool:
        try:
            return bool(await svc.redis.ping())
        except REDIS_ERRORS:
            return False

    db, redis = await asyncio.gather(svc.db.ping(), redis_ok())
    ready = db and redis
    body = {"status": "ready" if ready else "unavailable", "postgres": db, "redis": redis}
    return _json(body, 200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: ServicesDep) -> Response:
    pool = svc.db.pool
    POOL_SIZE.set(pool.get_size())
    POOL_IDLE.set(pool.get_idle_size())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
