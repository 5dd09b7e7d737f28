"""POST /api/action/complete: the flow, in the contract's order, independent of the framework.

1. JWT (401; 403 ``forbidden`` without the ``server`` scope when completions require it) ->
2. rate limit (429) -> 3. body size (413) and shape (400) -> 4. catalog and data (400) -> 5.
the award transaction (400 already_completed, 403 banned, 503) -> 6. the ranking update.

A ``server`` token completes for the user named in the body (``"userId"``): the body is read
first, since the rate limit counts that user, not the backend.

Served by :mod:`leaderboard.api.fastpath`; the FastAPI route of the same path (which documents
it in OpenAPI) calls the same :func:`complete_action`, so there is one implementation.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from leaderboard.api.errors import describe_validation
from leaderboard.api.schemas import CompleteActionRequest
from leaderboard.api.services import Services
from leaderboard.auth import SERVER, Principal, TokenError, check_user_id
from leaderboard.errors import AppError, error_body, invalid_request, payload_too_large

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Request ids: unique per process (random prefix) and cheap (a counter, no syscall per request).
_ID_PREFIX = f"{os.getpid():x}{secrets.token_hex(3)}"
_ID_COUNTER = itertools.count(1)

BodyReader = Callable[[int], Awaitable[bytes]]


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit``: never held past it,
    whatever Content-Length said (or did not say)."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise payload_too_large(limit)
    return bytes(body)


async def authenticate(svc: Services, authorization: str | None) -> Principal:
    if not authorization:
        raise AppError(401, "missing_token", "an Authorization: Bearer <token> header is required")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AppError(401, "invalid_token", "expected Authorization: Bearer <token>")
    try:
        return await svc.verifier.principal(token)
    except TokenError as exc:
        raise AppError(
            401, exc.code, exc.message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None


async def _admit(svc: Services, user_id: str) -> dict[str, str]:
    """The rate limit (429); the headers that tell the client where it stands."""
    decision = await svc.leaderboard.rate_limit(user_id)
    headers = decision.headers(svc.settings.rate_window_s)
    if not decision.admitted:
        raise AppError(
            429,
            "rate_limited",
            f"at most {decision.limit} completions per {svc.settings.rate_window_s} s; "
            f"retry in {headers['Retry-After']} s",
            headers,
        )
    return headers


async def _payload(
    svc: Services, content_length: str | None, read_body: BodyReader
) -> CompleteActionRequest:
    """The body: its size (413) and shape (400)."""
    limit = svc.settings.max_body_bytes
    if content_length is not None:
        if not content_length.isdigit():
            raise invalid_request("bad Content-Length")
        if int(content_length) > limit:
            raise payload_too_large(limit)
    body = await read_body(limit)
    try:
        return CompleteActionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(describe_validation(list(exc.errors()))) from None


def _named_user(payload: CompleteActionRequest) -> str:
    if payload.userId is None:
        raise invalid_request("a 'server' token must name the user: \"userId\" in the body")
    try:
        check_user_id(payload.userId)
    except TokenError:
        raise invalid_request("'userId' is not a valid user id") from None
    return payload.userId


async def complete_action(
    svc: Services,
    *,
    authorization: str | None,
    content_length: str | None,
    request_id: str | None,
    read_body: BodyReader,
) -> Reply:
    headers: dict[str, str] = {}
    try:
        principal = await authenticate(svc, authorization)
        trusted = SERVER in principal.scopes
        if svc.settings.require_server_scope and not trusted:
            raise AppError(403, "forbidden", "completions need a token with the 'server' scope")
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"
        if trusted:  # the user is named in the body: rate-limited once it is read
            payload = await _payload(svc, content_length, read_body)
            user_id = _named_user(payload)
            headers = {**await _admit(svc, user_id), "X-Request-ID": request_id}
        else:
            user_id = principal.sub
            headers = {**await _admit(svc, user_id), "X-Request-ID": request_id}
            payload = await _payload(svc, content_length, read_body)
            if payload.userId is not None and payload.userId != user_id:
                raise AppError(403, "forbidden", "only a 'server' token completes for another user")
        done = await svc.leaderboard.complete(user_id, payload.actionId, payload.data, request_id)
    except AppError as exc:
        return Reply(exc.status, error_body(exc.code, exc.message), {**headers, **exc.headers})
    return Reply(200, orjson.dumps(done.public()), headers)
