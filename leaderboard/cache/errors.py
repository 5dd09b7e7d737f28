"""The Redis failures every caller treats as "Redis is unavailable right now"."""

from __future__ import annotations

import redis.exceptions

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
