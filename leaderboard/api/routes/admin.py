"""The admin API (scope ``admin``): bans, adjustments, erasure, export, the audit log.

401 as everywhere without a valid token; 403 ``forbidden`` with a token that lacks the
``admin`` scope. A user id may hold ``/``: the export and erase routes take an id that does
not end in ``/ban`` or ``/adjustments`` (``adminuserid``), so ``DELETE .../x/ban`` stays the
unban of ``x`` and never erases a user ``x/ban``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

import leaderboard.api.routes.path_convertors  # noqa: F401 - registers the {userId:userid} convertor
from leaderboard.api.complete import authenticate, read_limited
from leaderboard.api.deps import ServicesDep
from leaderboard.api.errors import describe_validation
from leaderboard.api.schemas import errors
from leaderboard.api.services import Services
from leaderboard.auth import ADMIN, Principal
from leaderboard.cache.ranking import MAX_SCORE
from leaderboard.errors import AppError, invalid_request

router = APIRouter(prefix="/api/admin", tags=["admin"])

UserId = Annotated[str, Path(min_length=1, max_length=128)]


async def admin(request: Request, svc: ServicesDep) -> Principal:
    principal = await authenticate(svc, request.headers.get("authorization"))
    if ADMIN not in principal.scopes:
        raise AppError(403, "forbidden", "the admin API needs a token with the 'admin' scope")
    return principal


Admin = Annotated[Principal, Depends(admin)]


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: StrictStr = Field("", max_length=1000)


class Adjustment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: StrictInt = Field(
        ge=-MAX_SCORE, le=MAX_SCORE, description="not 0; negative: taken back"
    )
    reason: StrictStr = Field(min_length=1, max_length=1000)
    board: StrictStr | None = Field(None, min_length=1, max_length=64)


M = TypeVar("M", bound=BaseModel)


async def _body(request: Request, svc: Services, model: type[M], *, empty: bool = False) -> M:
    """The JSON body as ``model`` whatever its Content-Type says (as for completions; curl's
    ``-d`` sends a form type): 413 past the size limit, 400 if it is not that shape. An empty
    body is ``{}`` where ``empty`` allows it."""
    limit = svc.settings.max_body_bytes
    raw = await read_limited(request.stream(), limit)
    if not raw.strip() and empty:
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_request(describe_validation(list(exc.errors()))) from None


def _documented(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/users/{userId:userid}/ban",
    responses=errors(400, 401, 403, 413, 503),
    openapi_extra=_documented(Reason, required=False),
)
async def ban(request: Request, svc: ServicesDep, who: Admin, userId: UserId) -> Response:
    """Ban a user: their completions get 403 `banned` and they leave every board, current and
    archived (a broadcast if the top 10 changes). Their data is kept for the unban."""
    body = await _body(request, svc, Reason, empty=True)
    return _json(await svc.moderation.ban(userId, body.reason, who.sub))


@router.delete(
    "/users/{userId:userid}/ban",
    responses=errors(400, 401, 403, 413, 503),
    openapi_extra=_documented(Reason, required=False),
)
async def unban(request: Request, svc: ServicesDep, who: Admin, userId: UserId) -> Response:
    """Lift a ban: the user's scores and ranks come back exactly as they were."""
    body = await _body(request, svc, Reason, empty=True)
    return _json(await svc.moderation.unban(userId, body.reason, who.sub))


@router.post(
    "/users/{userId:userid}/adjustments",
    responses=errors(400, 401, 403, 404, 413, 503),
    openapi_extra=_documented(Adjustment),
)
async def adjust(request: Request, svc: ServicesDep, who: Admin, userId: UserId) -> Response:
    """Add points to a user's score or take them back (on the all-time board, or the current
    season of `board`); recorded as a row of its own. Returns the new score."""
    body = await _body(request, svc, Adjustment)
    if body.points == 0:
        raise AppError(400, "invalid_request", "points: an adjustment of 0 changes nothing")
    done = await svc.moderation.adjust(userId, body.points, body.reason, who.sub, body.board)
    return _json(done)


@router.delete("/users/{userId:adminuserid}", responses=errors(401, 403, 503))
async def erase(svc: ServicesDep, who: Admin, userId: UserId) -> Response:
    """Erase a user: every row and key holding their id goes (the top 10 is republished if
    they were in it); the audit log keeps that it happened, by whom, and counts, not the id."""
    return _json(await svc.moderation.erase(userId, who.sub))


@router.get("/users/{userId:adminuserid}", responses=errors(401, 403, 404, 503))
async def export(svc: ServicesDep, who: Admin, userId: UserId) -> Response:
    """Everything held about a user, completions included, as one JSON document."""
    return _json(await svc.moderation.export(userId))


@router.get("/audit", responses=errors(400, 401, 403, 503))
async def audit(
    svc: ServicesDep,
    who: Admin,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Admin actions, newest first: who, what, when, to whom, why. `next` is the cursor of
    the following page (null: the last)."""
    return _json(await svc.moderation.audit(cursor, limit))
