"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a queue per request)."""

from __future__ import annotations

import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaderboard import metrics

# Starlette path converters stay out of the route label (dashboards name the template).
_CONVERTER = re.compile(r"\{(\w+):\w+\}")


class RequestMetrics:
    """Counts responses and their latency by route template (never by raw path)."""

    def __init__(self) -> None:
        # prometheus_client's labels() takes a lock and builds a key on every call: keep the
        # children per (route, method, status); routes are templates, so this stays small.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        key = (path, method, status)
        children = self._children.get(key)
        if children is None:
            label = _CONVERTER.sub(r"{\1}", path)  # {userId:userid} -> {userId}
            children = (
                metrics.HTTP_REQUESTS.labels(label, method, str(status)),
                metrics.HTTP_LATENCY.labels(label, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


# One per process: the fast paths and the middleware count into the same children.
REQUEST_METRICS = RequestMetrics()


class MetricsMiddleware:
    """Counts every response FastAPI gives and its latency, by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            REQUEST_METRICS.observe(path, scope["method"], status, time.perf_counter() - started)
