"""What the Locust personas share: tokens, the WebSocket URL, valid action data."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from leaderboard import auth
from leaderboard.config import load_settings

_SETTINGS = load_settings()


def token(user_id: str, ttl: float = 3600) -> str:
    """Signed with LEADERBOARD_JWT_SECRET if set (a real cluster), else the local dev key."""
    return auth.mint(_SETTINGS, user_id, ttl=ttl)


def board() -> str:
    """The board viewers watch: LOADTEST_BOARD, default the all-time one."""
    return os.environ.get("LOADTEST_BOARD", "all-time")


def ws_url(host: str | None) -> str:
    """LEADERBOARD_WS_URL, else the local broadcaster next to the API (port 8001)."""
    if url := os.environ.get("LEADERBOARD_WS_URL"):
        return url
    parts = urlsplit(host or "http://127.0.0.1:8000")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.hostname}:{_SETTINGS.ws_port}/ws"


def example(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A valid ``data`` object for an action's JSON Schema (the shapes the catalog uses)."""
    if not schema:
        return {}
    value = _example(schema)
    return value if isinstance(value, dict) else {}


def _example(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _example(props[name]) for name in schema.get("required", props)}
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", 0), schema.get("maximum", schema.get("minimum", 0))
        return (low + high) // 2 if kind == "integer" else (low + high) / 2
    if kind == "boolean":
        return True
    if kind == "string":
        return "a" * max(1, schema.get("minLength", 1))
    return None
