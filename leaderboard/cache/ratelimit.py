"""Per-user rate limit: at most ``limit`` requests in any ``window`` seconds (a sliding log).

In Redis it is one script, so one round trip, atomic across every API process: trim the user's
log to the window, count, admit (and log) or refuse with the time until the oldest entry leaves
the window. Redis's clock is the only clock, so API pods with skewed clocks agree.

When Redis is unreachable, :class:`LocalRateLimiter` applies the same rule per process: with N
API processes a user may get up to N times the limit until Redis returns. That is the trade-off
the product chose (completions keep working; PostgreSQL still allows each action once).
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from leaderboard.cache.keys import Keys, ScriptFactory

# KEYS: log.  ARGV: limit, window ms, unique member.  Returns {admitted 0/1, remaining, reset ms}.
_SLIDING_LOG = """
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now_ms, now_ms .. '-' .. ARGV[3])
  redis.call('PEXPIRE', key, window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window - now_ms}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now_ms}
"""


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the oldest counted request leaves the window

    def headers(self, window_s: int) -> dict[str, str]:
        """IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers)."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w={window_s}",
        }
        if not self.admitted:
            out["Retry-After"] = str(max(self.reset_s, 1))
        return out


class RedisRateLimiter:
    def __init__(self, scripts: ScriptFactory, keys: Keys, limit: int, window_s: int) -> None:
        self.keys = keys
        self.limit = limit
        self.window_ms = window_s * 1000
        self._script = scripts(_SLIDING_LOG)
        # Log members must be unique within a millisecond: a per-process prefix and a counter.
        prefix = secrets.token_hex(4)
        self._ids = (f"{prefix}{n:x}" for n in itertools.count())

    async def hit(self, user_id: str) -> Decision:
        admitted, remaining, reset_ms = await self._script(
            keys=[self.keys.ratelimit(user_id)],
            args=[self.limit, self.window_ms, next(self._ids)],
        )
        return Decision(bool(admitted), self.limit, int(remaining), math.ceil(int(reset_ms) / 1000))


class LocalRateLimiter:
    """The same sliding log in this process's memory, for when Redis is unreachable.

    Bounded: at most ``max_users`` logs are kept, least recently used first out.
    """

    def __init__(self, limit: int, window_s: int, max_users: int = 100_000) -> None:
        self.limit = limit
        self.window = float(window_s)
        self.max_users = max_users
        self._logs: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, user_id: str, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        log = self._logs.pop(user_id, None) or deque()
        self._logs[user_id] = log
        if len(self._logs) > self.max_users:
            self._logs.popitem(last=False)
        while log and log[0] <= now - self.window:
            log.popleft()
        admitted = len(log) < self.limit
        if admitted:
            log.append(now)
        reset = math.ceil(log[0] + self.window - now) if log else 0
        remaining = self.limit - len(log)
        return Decision(admitted, self.limit, remaining, reset)
