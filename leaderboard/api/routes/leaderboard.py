"""GET /api/leaderboard and GET /api/leaderboard/users/{userId}."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import Response

import leaderboard.api.routes.path_convertors  # noqa: F401 - registers the {userId:userid} convertor
from leaderboard.api.deps import ServicesDep
from leaderboard.api.schemas import TopResponse, UserResponse, errors

router = APIRouter()


@router.get("/api/leaderboard", response_model=TopResponse, responses=errors(503))
async def top10(svc: ServicesDep) -> Response:
    """The top 10; ties: who reached the score first ranks higher. Served by the ASGI fast
    path (same function)."""
    return Response(await svc.leaderboard.reads.top_body(), media_type="application/json")


@router.get(
    "/api/leaderboard/users/{userId:userid}",
    response_model=UserResponse,
    responses=errors(404, 503),
)
async def user_rank(
    svc: ServicesDep,
    userId: str = Path(min_length=1, max_length=128),
) -> Response:
    """A user's score, rank and neighbours above and below."""
    view = await svc.leaderboard.reads.user(userId)
    body = {"userId": view.user_id, "score": view.score, "rank": view.rank, "around": view.around}
    return Response(orjson.dumps(body), media_type="application/json")
