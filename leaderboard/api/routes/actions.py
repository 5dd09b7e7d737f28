"""POST /api/action/complete and GET /api/actions."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from leaderboard.api.deps import ServicesDep, authenticated_user
from leaderboard.api.errors import describe_validation
from leaderboard.api.schemas import (
    CatalogResponse,
    CompleteActionRequest,
    CompleteActionResponse,
    errors,
)
from leaderboard.catalog import Catalog
from leaderboard.errors import AppError, invalid_request

router = APIRouter()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit) if declared.isdigit() else invalid_request("bad Content-Length")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


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


def _too_large(limit: int) -> AppError:
    return AppError(413, "payload_too_large", f"the request body exceeds {limit} bytes")


@router.post(
    "/api/action/complete",
    response_model=CompleteActionResponse,
    responses=errors(400, 401, 413, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CompleteActionRequest.model_json_schema()}},
        }
    },
)
async def complete_action(
    request: Request, svc: ServicesDep, user_id: Annotated[str, Depends(authenticated_user)]
) -> Response:
    """Award the action's points to the token's user, once per user and action."""
    decision = await svc.leaderboard.rate_limit(user_id)
    headers = decision.headers(svc.settings.rate_window_s)
    if not decision.admitted:
        raise AppError(
            429,
            "rate_limited",
            f"at most {decision.limit} completions per "
            f"{svc.settings.rate_window_s} s; retry in {headers['Retry-After']} s",
            headers,
        )
    supplied = request.headers.get("x-request-id", "")
    request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
    headers["X-Request-ID"] = request_id
    try:
        body = await _read_body(request, svc.settings.max_body_bytes)
        try:
            payload = CompleteActionRequest.model_validate_json(body)
        except ValidationError as exc:
            raise invalid_request(describe_validation(list(exc.errors()))) from None
        done = await svc.leaderboard.complete(user_id, payload.actionId, payload.data, request_id)
    except AppError as exc:
        exc.headers = {**headers, **exc.headers}
        raise
    return Response(orjson.dumps(done.public()), media_type="application/json", headers=headers)


@router.get("/api/actions", response_model=CatalogResponse)
async def list_actions(svc: ServicesDep) -> Response:
    """The action catalog: id, points and the JSON Schema its `data` must satisfy."""
    body = {"actions": [a.public() for a in svc.catalog.actions.values()]}
    return Response(orjson.dumps(body), media_type="application/json")
