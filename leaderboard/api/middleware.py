"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a queue per request)."""

from __future__ import annotations

import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaderboard import metrics

# Starlette path converters stay out of the route label (dashboards name the template).
_CONVERTER = re.compile(r"\{(\w+):\w+\}")


class MetricsMiddleware:
    """Counts every response and its latency by route template (never by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # prometheus_client's labels() takes a lock and builds a key on every call: keep the
        # children per (route, method, status); routes are templates, so this stays small.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            key = (path, scope["method"], status)
            children = self._children.get(key)
            if children is None:
                label = _CONVERTER.sub(r"{\1}", path)  # {userId:userid} -> {userId}
                children = (
                    metrics.HTTP_REQUESTS.labels(label, key[1], str(status)),
                    metrics.HTTP_LATENCY.labels(label, key[1]),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
