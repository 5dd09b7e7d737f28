"""The score-update flow, independent of HTTP, for every board (reads: :mod:`leaderboard.reads`).

PostgreSQL is the source of truth; Redis is a fast, rebuildable view of it. Every Redis call is
guarded: when Redis fails, completions still commit (rank comes back as null), the rate limit
falls back to this process, reads answer from PostgreSQL, and once Redis answers again the
rankings are rebuilt from PostgreSQL (:mod:`leaderboard.repair`).

A completion counts on the all-time board and on the current season of every board that
counts its action (one transaction); its Redis update is one script call for all of them.
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

from leaderboard import metrics, supervise
from leaderboard.boards import ALL_TIME
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.keys import Keys
from leaderboard.cache.pipe import RedisPipe
from leaderboard.cache.ranking import Ranking, RankingRangeError, Recorded
from leaderboard.cache.ratelimit import Decision, LocalRateLimiter, RedisRateLimiter
from leaderboard.catalog import Catalog
from leaderboard.db import awards, scores
from leaderboard.db.awards import Award, AwardBatcher, Completion
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.errors import AppError
from leaderboard.reads import BoardReads, RedisBreaker, db_unavailable
from leaderboard.reconcile import Reconciler
from leaderboard.repair import CATCH_UP_S, Repair
from leaderboard.seasonclock import SeasonClock
from leaderboard.standings import Standing

log = logging.getLogger("leaderboard.service")


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
        award_batches: int = 2,
        reconcile_interval_s: float = 5.0,
        reconcile_lag_s: float = 10.0,
        write_hold_s: float = 0.0,
    ) -> None:
        self.db = db
        self.write_hold_s = write_hold_s
        self.awards = AwardBatcher(db, max_batches=award_batches)
        self.client = client
        self.catalog = catalog
        self.ranking = Ranking(client, keys, pipe.script)
        self.limiter = RedisRateLimiter(pipe.script, keys, rate_limit, rate_window_s)
        self.local_limiter = LocalRateLimiter(rate_limit, rate_window_s)
        self.breaker = RedisBreaker()
        self.repair = Repair(db, self.ranking, self.record, list(catalog.boards))
        self.reconciler = Reconciler(
            self.repair, interval_s=reconcile_interval_s, lag_s=reconcile_lag_s
        )
        self.seasons = SeasonClock(db, self._announce)
        self.reads = BoardReads(
            db,
            self.ranking,
            self.breaker,
            self.seasons,
            self.schedule_rebuild,
            around=around,
            top_cache_s=top_cache_s,
        )
        self._tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle

    async def start(self) -> None:
        await self.seasons.refresh()
        self._tasks = [
            supervise.start("ranking-repair", self.repair.run),
            supervise.start("ranking-reconcile", self.reconciler.run),
            supervise.start("season-clock", self.seasons.run),
            supervise.start("ranking-catch-up", lambda: self.catch_up(CATCH_UP_S), forever=False),
        ]
        self.repair.schedule_all()

    async def stop(self) -> None:
        await self.awards.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.repair.stop()

    async def catch_up(self, window_s: float) -> int:
        return await self.repair.catch_up(window_s)

    def schedule_rebuild(self, board: str = ALL_TIME) -> None:
        self.repair.schedule_rebuild(board)

    # -- the write path

    async def rate_limit(self, user_id: str) -> Decision:
        if self.breaker.usable():
            try:
                decision = await self.limiter.hit(user_id)
                backend = "redis"
            except REDIS_ERRORS as exc:
                self.breaker.failed("ratelimit", exc)
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
        completion = Completion(user_id, action_id, orjson.dumps(data).decode(), request_id)
        result = await self._award(completion)
        if isinstance(result, Completed):
            return result
        if not result.known_action:  # in our catalog file but not active in the database
            raise _rejected(400, "unknown_action", f"there is no action {action_id!r}")
        if result.blocked:  # banned or erased: never ranked, whatever the award did
            raise _rejected(403, "banned", f"user {user_id!r} may not complete actions")
        if result.awarded is None:
            raise _rejected(
                400,
                "already_completed",
                f"user {user_id!r} already completed {action_id!r} {action.period_name}".strip(),
            )
        assert result.score is not None and result.reached_seq is not None
        metrics.COMPLETIONS.labels(action_id).inc()
        metrics.POINTS.inc(result.awarded)
        updates = [Standing(ALL_TIME, 1, result.score, result.reached_seq)]
        updates += [Standing(b.board, b.season, b.score, b.reached_seq) for b in result.boards]
        recorded = await self.record(user_id, updates)
        rank = None
        if recorded is not None and recorded.ranking_ready:
            rank = recorded.rank  # a rank from an incomplete sorted set would be wrong
        return Completed(user_id, action_id, result.awarded, result.score, rank)

    async def _award(self, completion: Completion) -> Award | Completed:
        """The award, held while no primary takes writes (a switchover, a failover) for up to
        ``write_hold_s``, then 503. A retry first asks whether the attempt before it committed
        after all (its outcome was unknown): if so it answers with that completion, so a held
        request is counted once and told so."""
        deadline = time.monotonic() + self.write_hold_s
        attempt = 0
        while True:
            try:
                if attempt:
                    done = await self._committed(completion)
                    if done is not None:
                        return done
                return await self.awards.award(completion)
            except DatabaseUnavailable as exc:
                attempt += 1
                pause = min(0.05 * attempt, 0.25)
                if time.monotonic() + pause >= deadline:
                    self.repair.outcome_unknown(completion.user_id, completion.action_id)
                    raise db_unavailable("the database") from exc
                metrics.WRITES_HELD.inc()
                await asyncio.sleep(pause)

    async def _committed(self, completion: Completion) -> Completed | None:
        found = await awards.by_request(
            self.db, completion.user_id, completion.action_id, completion.request_id
        )
        if found is None:
            return None
        points, score = found
        standings = await scores.standings(self.db, users=[completion.user_id])
        recorded = await self.record(completion.user_id, standings.get(completion.user_id, []))
        rank = recorded.rank if recorded is not None and recorded.ranking_ready else None
        return Completed(completion.user_id, completion.action_id, points, score, rank)

    async def record(self, user_id: str, updates: list[Standing]) -> Recorded | None:
        """Standing the Redis rankings after the commit (None if Redis cannot take it)."""
        if not self.breaker.usable():
            self.repair.stale = True
            metrics.REDIS_FALLBACKS.labels("record").inc()
            return None
        try:
            recorded = await self.ranking.record(user_id, updates)
        except REDIS_ERRORS as exc:
            self.repair.stale = True
            self.breaker.failed("record", exc)
            return None
        except RankingRangeError:
            log.error("a score of %r is outside the exact ranking range: %s", user_id, updates)
            return None
        for board, published, ready in recorded.boards:
            if published is not None:
                metrics.TOP10_CHANGES.labels(board).inc()
            if not ready:
                self.schedule_rebuild(board)
        if recorded.rank is not None and recorded.rank <= 10:
            self.reads.forget_top()  # read-your-writes for this process's own clients
        return recorded

    async def _announce(self, board: str, season: int) -> None:
        """A season starts: publish the board's new (empty) top 10."""
        try:
            seq = await self.ranking.publish_if_changed(board, season)
        except REDIS_ERRORS as exc:  # the first completion of the season will switch it
            self.breaker.failed("reset", exc)
            return
        if seq is not None:
            metrics.TOP10_CHANGES.labels(board).inc()


def _rejected(status: int, code: str, message: str) -> AppError:
    metrics.REJECTED.labels(code).inc()
    return AppError(status, code, message)
