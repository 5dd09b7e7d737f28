"""Generations of a board's Redis ranking: when a rebuild may call it complete.

``epoch`` in the board's hash names the ranking's current generation. Whatever may have left
the sorted set short of PostgreSQL starts a new one: an invalidation (a process missed a
record) writes a new epoch, and a Redis that lost its data lost the epoch with it. A rebuild
reads the epoch before its first read of PostgreSQL and may mark the ranking complete only if
the epoch is still that one. So a rebuild whose reads may predate a missed record never marks
the ranking complete, whichever process runs it and however long it takes (the chaos campaign
lost completions that way: a rebuild begun before a record was missed ended after the
invalidation, marked the ranking ready, and the missed users sorted before its cursor).
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from leaderboard.cache.keys import BoardKeys

# KEYS: top10.  ARGV: a new epoch, used if the hash has none.  Returns the current epoch.
_BEGIN = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then return epoch end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
return ARGV[1]
"""

# KEYS: top10.  ARGV: a new epoch.  The ranking is incomplete, in a new generation.
_INVALIDATE = """
redis.call('HDEL', KEYS[1], 'ranking')
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
return 1
"""

# KEYS: scores, top10.  ARGV: season, epoch.  The end of a rebuild: the ranking is complete
# if the sorted set still holds that season in that generation (1). A later generation: 0,
# and the caller rebuilds again (the entries stay: written from PostgreSQL's rows, newest
# standing winning, they are never ahead of PostgreSQL). Another season (a reset came in
# between, and the rebuild may have added the old season's entries): the set is emptied,
# incomplete (-1).
_COMPLETE = """
if tonumber(redis.call('HGET', KEYS[2], 'season') or '0') ~= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], 'ranking')
  return -1
end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'ranking', 'ready')
return 1
"""


class Generations:
    def __init__(self, client: aioredis.Redis) -> None:
        self._begin = client.register_script(_BEGIN)
        self._invalidate = client.register_script(_INVALIDATE)
        self._complete = client.register_script(_COMPLETE)

    async def begin(self, board: BoardKeys) -> str:
        """The current generation (started if the hash has none): read it before PostgreSQL."""
        epoch = await self._begin(keys=[board.top10], args=[secrets.token_hex(16)])
        return epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def invalidate(self, board: BoardKeys) -> None:
        await self._invalidate(keys=[board.top10], args=[secrets.token_hex(16)])

    async def complete(self, board: BoardKeys, season: int, epoch: str) -> int:
        """Mark the ranking complete if it still holds ``season`` in generation ``epoch``:
        1 done, 0 a later generation began, -1 another season."""
        return int(await self._complete(keys=[board.scores, board.top10], args=[season, epoch]))
