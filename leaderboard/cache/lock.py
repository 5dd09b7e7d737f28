"""A lease in Redis held by one process at a time (``SET NX PX`` with a random token), for
work that one API process does for all of them: a board's rebuild, the reconciliation.

Only the holder renews or releases it (the token is checked in a script), and it expires by
itself: a process that dies holding it delays the work by ``ttl_s`` at most. It is a lease,
not a mutex: everything done under it must stay correct if two holders overlap (ranking
writes keep the newest standing, and readiness is decided by the ranking's generation)."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

# KEYS: lock.  ARGV: token, ttl ms.  Renew only if we still hold it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock.  ARGV: token.  Delete only if we still hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, client: aioredis.Redis, key: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self) -> bool:
        return bool(await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.token])
