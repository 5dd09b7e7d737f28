"""The score-update flow and the reads, independent of HTTP.

PostgreSQL is the source of truth; Redis is a fast, rebuildable view of it. Every Redis call is
guarded: when Redis fails, completions still commit (rank comes back as null), the rate limit
falls back to this process, reads answer from PostgreSQL, and once Redis answers again the
ranking is rebuilt from PostgreSQL (one rebuild at a time across all API processes).

A completion whose award failed on a timeout may still commit: its commit may be waiting for
the synchronous standby (it becomes visible once the standby confirms it, or once the wait is
cancelled). Such completions are looked for in PostgreSQL every second for a while, and put
into the ranking when they show up, so that the ranking does not miss them.

A process killed between a commit and its Redis update leaves nothing to look for: its
successor (every API process, at start) compares the scores reached in the last
``CATCH_UP_S`` with the ranking and records what it lacks (found by the chaos campaign:
a kill -9 of the API left a committed completion out of Redis for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from leaderboard import metrics
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.keys import Keys
from leaderboard.cache.pipe import RedisPipe
from leaderboard.cache.ranking import (
    NOT_READY,
    Entry,
    Ranking,
    RankingRangeError,
    UserView,
    decode,
)
from leaderboard.cache.ratelimit import Decision, LocalRateLimiter, RedisRateLimiter
from leaderboard.catalog import Catalog
from leaderboard.db import scores
from leaderboard.db.awards import AwardBatcher, Completion, committed_scores
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.errors import AppError, unavailable

log = logging.getLogger("leaderboard.scoring")


UNCERTAIN_MAX = 10_000  # completions with an unknown outcome followed at once
UNCERTAIN_TTL_S = 300.0  # how long one is looked for
CATCH_UP_S = 300.0  # at start: scores reached this recently are checked against the ranking
CATCH_UP_SQL = """
SELECT user_id, score, reached_seq FROM scores
 WHERE reached_at > now() - make_interval(secs => $1)
"""

_REBUILD_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, DatabaseUnavailable)


class RedisBreaker:
    """After a Redis failure, skip Redis for ``cooldown_s`` instead of paying a timeout on
    every request; then try again."""

    def __init__(self, cooldown_s: float = 1.0) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self) -> None:
        self._open_until = time.monotonic() + self.cooldown_s


@dataclass(frozen=True)
class Completed:
    user_id: str
    action_id: str
    points: int
    score: int
    rank: int | None

    def public(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "actionId": self.action_id,
            "pointsAwarded": self.points,
            "score": self.score,
            "rank": self.rank,
        }


class Leaderboard:
    def __init__(
        self,
        db: Database,
        client: aioredis.Redis,
        pipe: RedisPipe,
        keys: Keys,
        catalog: Catalog,
        *,
        rate_limit: int,
        rate_window_s: int,
        top_cache_s: float,
        around: int,
        award_batches: int = 4,
    ) -> None:
        self.db = db
        self.awards = AwardBatcher(db, max_batches=award_batches)
        self.client = client
        self.catalog = catalog
        self.ranking = Ranking(client, keys, pipe.script)
        self.limiter = RedisRateLimiter(pipe.script, keys, rate_limit, rate_window_s)
        self.local_limiter = LocalRateLimiter(rate_limit, rate_window_s)
        self.breaker = RedisBreaker()
        self.top_cache_s = top_cache_s
        self.around = around
        # (read at, top 10, its JSON response body) from Redis; reused for top_cache_s.
        self._top_cache: tuple[float, list[Entry], bytes] | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._recover: asyncio.Task[None] | None = None
        self._catch_up: asyncio.Task[int] | None = None
        # A completion committed while Redis was unreachable: the ranking misses it.
        self._ranking_stale = False
        # (user, action) whose award failed with an unknown outcome -> when (monotonic).
        self._uncertain: dict[tuple[str, str], float] = {}

    # -- lifecycle

    def start(self) -> None:
        self._recover = asyncio.create_task(self._recover_loop(), name="ranking-recover")
        self._catch_up = asyncio.create_task(self.catch_up(CATCH_UP_S), name="ranking-catch-up")
        self.schedule_rebuild()

    async def stop(self) -> None:
        await self.awards.close()
        for task in (self._recover, self._rebuild, self._catch_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- redis guard

    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        if self.breaker.usable():
            log.warning("redis unavailable during %s: %s", operation, exc)
        self.breaker.failed()
        metrics.REDIS_FALLBACKS.labels(operation).inc()

    # -- the write path

    async def rate_limit(self, user_id: str) -> Decision:
        if self.breaker.usable():
            try:
                decision = await self.limiter.hit(user_id)
                backend = "redis"
            except REDIS_ERRORS as exc:
                self._redis_failed("ratelimit", exc)
                decision, backend = self.local_limiter.hit(user_id), "local"
        else:
            metrics.REDIS_FALLBACKS.labels("ratelimit").inc()
            decision, backend = self.local_limiter.hit(user_id), "local"
        if not decision.admitted:
            metrics.RATE_LIMITED.labels(backend).inc()
        return decision

    async def complete(
        self, user_id: str, action_id: str, data: dict[str, Any], request_id: str
    ) -> Completed:
        action = self.catalog.get(action_id)
        if action is None:
            raise _rejected(400, "unknown_action", f"there is no action {action_id!r}")
        problem = action.check_data(data)
        if problem is not None:
            raise _rejected(400, "invalid_action_data", problem)
        try:
            result = await self.awards.award(
                Completion(user_id, action_id, orjson.dumps(data).decode(), request_id)
            )
        except DatabaseUnavailable as exc:
            metrics.DB_UNAVAILABLE.inc()
            self._outcome_unknown(user_id, action_id)
            raise unavailable("the database") from exc
        if not result.known_action:  # in our catalog file but not active in the database
            raise _rejected(400, "unknown_action", f"there is no action {action_id!r}")
        if result.awarded is None:
            raise _rejected(
                400,
                "already_completed",
                f"user {user_id!r} already completed {action_id!r} {action.period_name}".strip(),
            )
        assert result.score is not None and result.reached_seq is not None
        metrics.COMPLETIONS.labels(action_id).inc()
        metrics.POINTS.inc(result.awarded)
        rank = await self._record(user_id, result.score, result.reached_seq)
        return Completed(user_id, action_id, result.awarded, result.score, rank)

    async def _record(self, user_id: str, score: int, reached_seq: int) -> int | None:
        """Update the Redis ranking after the commit; the rank, or None if Redis cannot tell."""
        if not self.breaker.usable():
            self._ranking_stale = True
            metrics.REDIS_FALLBACKS.labels("record").inc()
            return None
        try:
            recorded = await self.ranking.record(user_id, score, reached_seq)
        except REDIS_ERRORS as exc:
            self._ranking_stale = True
            self._redis_failed("record", exc)
            return None
        except RankingRangeError:
            log.error("score %d of %r is outside the exact ranking range", score, user_id)
            return None
        if recorded.published_seq is not None:
            metrics.TOP10_CHANGES.inc()
        if recorded.rank is not None and recorded.rank <= 10:
            self._top_cache = None  # read-your-writes for this process's own clients
        if not recorded.ranking_ready:
            self.schedule_rebuild()
            return None  # a rank from an incomplete sorted set would be wrong
        return recorded.rank

    # -- reads

    async def top(self) -> list[Entry]:
        return (await self._top())[0]

    async def top_body(self) -> bytes:
        """``{"top": [...]}`` serialised, reused with the cached top 10."""
        return (await self._top())[1]

    async def _top(self) -> tuple[list[Entry], bytes]:
        cached = self._top_cache
        if cached is not None and time.monotonic() - cached[0] < self.top_cache_s:
            return cached[1], cached[2]
        if self.breaker.usable():
            try:
                top = await self.ranking.top()
            except REDIS_ERRORS as exc:
                self._redis_failed("top", exc)
            else:
                if top is not None:
                    body = orjson.dumps({"top": top})
                    self._top_cache = (time.monotonic(), top, body)
                    return top, body
                self.schedule_rebuild()
        else:
            metrics.REDIS_FALLBACKS.labels("top").inc()
        try:
            top = await scores.top(self.db)
        except DatabaseUnavailable as exc:
            metrics.DB_UNAVAILABLE.inc()
            raise unavailable("the leaderboard") from exc
        return top, orjson.dumps({"top": top})

    async def user(self, user_id: str) -> UserView:
        view: UserView | object | None = NOT_READY
        if self.breaker.usable():
            try:
                view = await self.ranking.user(user_id, self.around)
            except REDIS_ERRORS as exc:
                self._redis_failed("user", exc)
            if view is NOT_READY:
                self.schedule_rebuild()
        if view is NOT_READY:
            try:
                view = await scores.user_view(self.db, user_id, self.around)
            except DatabaseUnavailable as exc:
                metrics.DB_UNAVAILABLE.inc()
                raise unavailable("the leaderboard") from exc
        if view is None:
            raise AppError(404, "unknown_user", f"user {user_id!r} has no score yet")
        assert isinstance(view, UserView)
        return view

    # -- keeping Redis in step with PostgreSQL

    def schedule_rebuild(self) -> None:
        if self._rebuild is None or self._rebuild.done():
            self._rebuild = asyncio.create_task(self._rebuild_once(), name="ranking-rebuild")

    async def _rebuild_once(self) -> None:
        try:
            if await self.client.hget(self.ranking.keys.top10, "ranking") == b"ready":
                return
            done = await self.ranking.rebuild(scores.all_scores(self.db))
        except _REBUILD_ERRORS as exc:
            log.warning("ranking rebuild failed: %s", exc)
            metrics.REBUILDS.labels("failed").inc()
            self._ranking_stale = True  # try again once both are back
            return
        metrics.REBUILDS.labels("done" if done else "elsewhere").inc()
        if done:
            log.info("ranking rebuilt from PostgreSQL")

    async def catch_up(self, window_s: float, batch: int = 1000) -> int:
        """Record the scores reached in the last ``window_s`` that the ranking lacks or holds
        lower (idempotent: the update keeps the higher score); how many were recorded."""
        try:
            rows = await self.db.fetch(CATCH_UP_SQL, window_s)
            recorded = 0
            for i in range(0, len(rows), batch):
                chunk = rows[i : i + batch]
                held = await self.client.zmscore(
                    self.ranking.keys.scores, [r["user_id"] for r in chunk]
                )
                for row, composite in zip(chunk, held, strict=True):
                    if composite is None or decode(composite) < row["score"]:
                        await self._record(row["user_id"], row["score"], row["reached_seq"])
                        recorded += 1
        except _REBUILD_ERRORS as exc:  # a rebuild follows once both answer again
            log.warning("ranking catch-up failed: %s", exc)
            self._ranking_stale = True
            return 0
        if recorded:
            log.info("ranking catch-up: recorded %d scores the ranking lacked", recorded)
        return recorded

    def _outcome_unknown(self, user_id: str, action_id: str) -> None:
        if len(self._uncertain) >= UNCERTAIN_MAX:
            self._ranking_stale = True  # too many to follow one by one: rebuild instead
            return
        self._uncertain.setdefault((user_id, action_id), time.monotonic())

    async def _reconcile(self) -> None:
        """Put into the ranking the uncertain completions that turned out committed; forget
        those still absent after ``UNCERTAIN_TTL_S`` (rolled back, or lost with a primary)."""
        pending = list(self._uncertain)
        try:
            found = await committed_scores(self.db, pending)
        except DatabaseUnavailable:
            return  # still down: next round
        for (user_id, action_id), score, reached_seq in found:
            del self._uncertain[user_id, action_id]
            # ZADD GT: if a later completion already recorded a higher score, a no-op.
            await self._record(user_id, score, reached_seq)
            metrics.UNCERTAIN.labels("committed").inc()
        expired = time.monotonic() - UNCERTAIN_TTL_S
        for key in [k for k, at in self._uncertain.items() if at < expired]:
            del self._uncertain[key]
            metrics.UNCERTAIN.labels("absent").inc()

    async def _recover_loop(self, interval_s: float = 1.0) -> None:
        """Read back uncertain completions; once Redis answers again after completions it
        missed, rebuild the ranking."""
        while True:
            await asyncio.sleep(interval_s)
            if self._uncertain:
                await self._reconcile()
            if not self._ranking_stale:
                continue
            try:
                await self.client.ping()
                self._ranking_stale = False
                await self.ranking.invalidate()  # reads use PostgreSQL until the rebuild ends
            except REDIS_ERRORS:
                self._ranking_stale = True
                continue
            self.schedule_rebuild()


def _rejected(status: int, code: str, message: str) -> AppError:
    metrics.REJECTED.labels(code).inc()
    return AppError(status, code, message)
