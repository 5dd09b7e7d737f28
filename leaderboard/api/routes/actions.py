"""POST /api/action/complete (documented here, served by the ASGI fast path) and
GET /api/actions."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from leaderboard.api.complete import complete_action, read_limited
from leaderboard.api.deps import ServicesDep
from leaderboard.api.schemas import CatalogResponse, CompleteActionResponse, errors
from leaderboard.catalog import Catalog

router = APIRouter()


def request_schema(catalog: Catalog) -> dict[str, Any]:
    """The body schema: one alternative per action, each with its own ``data`` schema."""
    alternatives = []
    for action in catalog.actions.values():
        data = action.data_schema or {"type": "object", "maxProperties": 0}
        alternatives.append(
            {
                "type": "object",
                "title": action.id,
                "required": ["actionId", "data"] if action.data_schema else ["actionId"],
                "properties": {"actionId": {"type": "string", "const": action.id}, "data": data},
            }
        )
    return {"oneOf": alternatives}


@router.post(
    "/api/action/complete",
    response_model=CompleteActionResponse,
    responses=errors(400, 401, 413, 429, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}}}},
)
async def complete(request: Request, svc: ServicesDep) -> Response:
    """Award the action's points to the token's user, once per user and action.

    Order of checks: token (401), rate limit (429), body size (413) and shape (400), action
    and its data (400), then one transaction (400 `already_completed`, 503)."""

    reply = await complete_action(
        svc,
        authorization=request.headers.get("authorization"),
        content_length=request.headers.get("content-length"),
        request_id=request.headers.get("x-request-id"),
        read_body=lambda limit: read_limited(request.stream(), limit),
    )
    return Response(
        reply.body, status_code=reply.status, media_type="application/json", headers=reply.headers
    )


@router.get("/api/actions", response_model=CatalogResponse)
async def list_actions(svc: ServicesDep) -> Response:
    """The action catalog: id, points and the JSON Schema its `data` must satisfy."""
    body = {"actions": [a.public() for a in svc.catalog.actions.values()]}
    return Response(orjson.dumps(body), media_type="application/json")
