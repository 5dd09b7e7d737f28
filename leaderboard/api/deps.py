"""Request dependencies: the running services and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from leaderboard.api.services import Services
from leaderboard.auth import TokenError, Verifier
from leaderboard.errors import AppError


async def services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which cost
    # two thirds of the throughput of the read path.
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]


async def authenticated_user(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AppError(401, "missing_token", "an Authorization: Bearer <token> header is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AppError(401, "invalid_token", "expected Authorization: Bearer <token>")
    try:
        verifier: Verifier = request.app.state.services.verifier
        return await verifier.user_id(token.strip())
    except TokenError as exc:
        raise AppError(
            401, exc.code, exc.message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
