"""The ranking in Redis: one sorted set, one atomic update-compare-publish script.

Ties: who reached a score first ranks higher. PostgreSQL orders by ``(score DESC, reached_seq
ASC)``; Redis gets the same order by packing both into the sorted-set score, a double::

    composite = score * 2**SEQ_BITS + (2**SEQ_BITS - 1 - reached_seq)

A double holds integers exactly up to 2**53, so the order is exact while ``score < 2**20``
(1,048,576 points; the catalog bounds a user's score by the sum of its actions) and
``reached_seq < 2**33`` (8.6 billion score changes). :func:`encode` refuses values outside that
range rather than ranking them wrongly.

Top-10 change detection is a single Lua script (atomic in Redis): update the user's entry, read
the top 10, compare its membership (the set of user ids, not their scores or order) with the
last published one and, only if it changed, bump ``seq``, store and publish the new message.
Concurrent completions therefore give no missed and no duplicate broadcasts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypedDict

import redis.asyncio as aioredis

from leaderboard.cache.keys import Keys, ScriptFactory

SCORE_BITS = 20
SEQ_BITS = 33
SEQ_UNIT = 1 << SEQ_BITS
MAX_SCORE = (1 << SCORE_BITS) - 1
MAX_SEQ = SEQ_UNIT - 1
TOP_N = 10


class RankingRangeError(ValueError):
    pass


class Entry(TypedDict):
    rank: int
    userId: str
    score: int


def encode(score: int, reached_seq: int) -> int:
    if not 0 <= score <= MAX_SCORE or not 0 <= reached_seq <= MAX_SEQ:
        raise RankingRangeError(f"score {score} / reached_seq {reached_seq} out of exact range")
    return score * SEQ_UNIT + (MAX_SEQ - reached_seq)


def decode(composite: bytes | str | float) -> int:
    return int(float(composite)) >> SEQ_BITS


# KEYS: scores, top10.  ARGV: channel, user ('' = no update), composite, seq unit.
# Returns {rank (0-based) or false, published seq or 0, ranking ready 0/1}.
_UPDATE = """
local scores, top10, channel = KEYS[1], KEYS[2], ARGV[1]
local user, unit = ARGV[2], tonumber(ARGV[4])
local rank = false
if user ~= '' then
  redis.call('ZADD', scores, 'GT', ARGV[3], user)
  rank = redis.call('ZREVRANK', scores, user)
end
local ready = redis.call('HGET', top10, 'ranking') == 'ready' and 1 or 0
local top = redis.call('ZREVRANGE', scores, 0, 9, 'WITHSCORES')
local ids = {}
for i = 1, #top, 2 do ids[#ids + 1] = top[i] end
table.sort(ids)
local membership = table.concat(ids, '\\n')
-- Unchanged membership publishes nothing, except the very first state (an empty board
-- has one too): broadcasters then hand viewers its seq, and the first real change is seq+1
-- for them, not a gap from 0 to the clock.
if membership == (redis.call('HGET', top10, 'members') or '')
    and redis.call('HEXISTS', top10, 'seq') == 1 then
  return {rank, 0, ready}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('HEXISTS', top10, 'seq') == 0 then
  -- seq starts from the clock, so a Redis that lost its data never goes back in seq
  redis.call('HSET', top10, 'seq', now_ms)
end
local seq = redis.call('HINCRBY', top10, 'seq', 1)
local entries = {}
for i = 1, #top, 2 do
  local score = math.floor(tonumber(top[i + 1]) / unit)
  entries[#entries + 1] = string.format('{"rank":%d,"userId":%s,"score":%d}',
    (i + 1) / 2, cjson.encode(top[i]), score)
end
local message = string.format('{"type":"top10","seq":%d,"top":[%s],"ts":%d}',
  seq, table.concat(entries, ','), now_ms)
redis.call('HSET', top10, 'members', membership, 'message', message)
redis.call('PUBLISH', channel, message)
return {rank, seq, ready}
"""

# KEYS: scores, top10.  Returns {ready 0/1, member, composite, member, composite, ...}.
_TOP = """
if redis.call('HGET', KEYS[2], 'ranking') ~= 'ready' then return {0} end
local top = redis.call('ZREVRANGE', KEYS[1], 0, 9, 'WITHSCORES')
table.insert(top, 1, 1)
return top
"""

# KEYS: scores, top10.  ARGV: user, radius.
# Returns {0} (not ready), {1} (unknown user) or {1, rank0, first0, {member, composite, ...}}.
_USER = """
if redis.call('HGET', KEYS[2], 'ranking') ~= 'ready' then return {0} end
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then return {1} end
local first = math.max(rank - tonumber(ARGV[2]), 0)
return {1, rank, first, redis.call('ZREVRANGE', KEYS[1], first, rank + tonumber(ARGV[2]),
  'WITHSCORES')}
"""

# KEYS: lock.  ARGV: token.  Delete the lock only if we still hold it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Recorded:
    rank: int | None  # 1-based
    published_seq: int | None  # the seq of the broadcast this update caused, if any
    ranking_ready: bool


@dataclass(frozen=True)
class UserView:
    user_id: str
    score: int
    rank: int
    around: list[Entry]


NOT_READY = object()


def _entries(flat: list[Any], first_rank: int) -> list[Entry]:
    return [
        {"rank": first_rank + i // 2, "userId": _text(flat[i]), "score": decode(flat[i + 1])}
        for i in range(0, len(flat), 2)
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Ranking:
    """``client`` (redis-py) serves the rare operations; ``scripts`` makes the hot-path
    scripts (by default redis-py's, in the API a :class:`~leaderboard.cache.pipe.RedisPipe`)."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, scripts: ScriptFactory | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        make = scripts or client.register_script
        self._update = make(_UPDATE)
        self._top = make(_TOP)
        self._user = make(_USER)
        self._unlock = client.register_script(_UNLOCK)

    async def record(self, user_id: str, score: int, reached_seq: int) -> Recorded:
        composite = encode(score, reached_seq)
        rank, seq, ready = await self._update(
            keys=[self.keys.scores, self.keys.top10],
            args=[self.keys.updates, user_id, composite, SEQ_UNIT],
        )
        return Recorded(
            rank=None if rank is None else int(rank) + 1,
            published_seq=int(seq) or None,
            ranking_ready=bool(ready),
        )

    async def publish_if_changed(self) -> int | None:
        _, seq, _ = await self._update(
            keys=[self.keys.scores, self.keys.top10], args=[self.keys.updates, "", 0, SEQ_UNIT]
        )
        return int(seq) or None

    async def top(self) -> list[Entry] | None:
        """The top 10, or None if the ranking is not (yet) complete in Redis."""
        reply = await self._top(keys=[self.keys.scores, self.keys.top10])
        if not int(reply[0]):
            return None
        return _entries(reply[1:], 1)

    async def user(self, user_id: str, radius: int) -> UserView | object | None:
        """The user's rank and neighbours; None if unknown; NOT_READY if Redis cannot tell."""
        reply = await self._user(keys=[self.keys.scores, self.keys.top10], args=[user_id, radius])
        if not int(reply[0]):
            return NOT_READY
        if len(reply) == 1:
            return None
        rank0, first0, flat = int(reply[1]), int(reply[2]), reply[3]
        around = _entries(flat, first0 + 1)
        me = around[rank0 - first0]
        return UserView(user_id=user_id, score=me["score"], rank=rank0 + 1, around=around)

    async def rebuild(
        self, batches: AsyncIterator[list[tuple[str, int, int]]], *, lock_ttl_s: int = 120
    ) -> bool:
        """Reload every score from PostgreSQL; False if another process is already at it.

        Concurrent completions keep writing while this runs; ``ZADD GT`` on both sides means
        the higher (newer) score wins whichever lands last. Reads go to PostgreSQL until the
        final ``ranking = ready`` flag is set.
        """
        token = secrets.token_hex(16)
        if not await self.client.set(self.keys.rebuild_lock, token, nx=True, ex=lock_ttl_s):
            return False
        try:
            async for batch in batches:
                mapping = {user: encode(score, seq) for user, score, seq in batch}
                if mapping:
                    await self.client.zadd(self.keys.scores, mapping, gt=True)
            await self.client.hset(self.keys.top10, "ranking", "ready")
            await self.publish_if_changed()
            return True
        finally:
            await self._unlock(keys=[self.keys.rebuild_lock], args=[token])

    async def invalidate(self) -> None:
        """Mark the ranking incomplete (reads fall back to PostgreSQL until a rebuild)."""
        await self.client.hdel(self.keys.top10, "ranking")
