"""The two hot endpoints served straight from ASGI, in front of FastAPI.

``POST /api/action/complete`` (the write path) and ``GET /api/leaderboard`` (the read path)
went through FastAPI's router and dependency injection, which cost about a fifth of the write
path's CPU and two fifths of the read path's (measured with py-spy under `make bench`). Here
they are matched by method and path and answered directly, before FastAPI's own middleware
(its error and telemetry layers were another 4%); every other request passes on to FastAPI.
The FastAPI routes of the same paths stay: they document the endpoints in OpenAPI and call the
same functions, so each flow has one implementation. What FastAPI's layers did for these two
paths is done here: the request metrics, and a 500 in the error format for a bug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from leaderboard.api.complete import Reply, complete_action, read_limited
from leaderboard.api.middleware import REQUEST_METRICS
from leaderboard.api.services import Services
from leaderboard.errors import AppError, error_body

log = logging.getLogger("leaderboard.api")

COMPLETE = "/api/action/complete"
TOP = "/api/leaderboard"

Handler = Callable[[Services, Scope, Receive], Awaitable[Reply]]


async def _complete(svc: Services, scope: Scope, receive: Receive) -> Reply:
    wanted: dict[bytes, str | None] = {
        b"authorization": None,
        b"content-length": None,
        b"x-request-id": None,
    }
    for name, value in scope["headers"]:
        if name in wanted:
            wanted[name] = value.decode("latin-1")

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    return await complete_action(
        svc,
        authorization=wanted[b"authorization"],
        content_length=wanted[b"content-length"],
        request_id=wanted[b"x-request-id"],
        read_body=lambda limit: read_limited(chunks(), limit),
    )


async def _top(svc: Services, scope: Scope, receive: Receive) -> Reply:
    try:
        return Reply(200, await svc.leaderboard.reads.top_body())
    except AppError as exc:
        return Reply(exc.status, error_body(exc.code, exc.message), exc.headers)


_ROUTES: dict[tuple[str, str], tuple[str, Handler]] = {
    ("POST", COMPLETE): (COMPLETE, _complete),
    ("GET", TOP): (TOP, _top),
}


async def serve_fast(svc: Services, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer ``scope`` if it is one of the hot endpoints (True), else leave it (False)."""
    route = _ROUTES.get((scope["method"], scope["path"]))
    if route is None:
        return False
    started = time.perf_counter()
    try:
        reply = await route[1](svc, scope, receive)
    except Exception:
        log.exception("unexpected error on %s %s", scope["method"], route[0])
        reply = Reply(500, error_body("internal_error", "an unexpected error occurred"))
    try:
        await send_reply(send, reply)
    finally:  # counted even if the client left before the answer
        elapsed = time.perf_counter() - started
        REQUEST_METRICS.observe(route[0], scope["method"], reply.status, elapsed)
    return True


async def send_reply(send: Send, reply: Reply) -> None:
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw})
    await send({"type": "http.response.body", "body": reply.body})
