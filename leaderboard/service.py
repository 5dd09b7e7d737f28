"""The score-update flow and the reads, independent of HTTP, for every board.

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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from leaderboard import metrics, supervise
from leaderboard.boards import ALL_TIME, Season
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.keys import Keys
from leaderboard.cache.pipe import RedisPipe
from leaderboard.cache.ranking import NOT_READY, Ranking, RankingRangeError, Recorded
from leaderboard.cache.ratelimit import Decision, LocalRateLimiter, RedisRateLimiter
from leaderboard.catalog import Catalog
from leaderboard.db import awards, scores
from leaderboard.db.awards import Award, AwardBatcher, Completion
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.errors import AppError, unavailable
from leaderboard.reconcile import Reconciler
from leaderboard.repair import CATCH_UP_S, Repair
from leaderboard.seasonclock import SeasonClock
from leaderboard.standings import Entry, Standing, UserView

log = logging.getLogger("leaderboard.service")


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
        self.top_cache_s = top_cache_s
        self.around = around
        # (read at, top 10, its JSON response body) from Redis; reused for top_cache_s.
        self._top_cache: tuple[float, list[Entry], bytes] | None = None
        self.repair = Repair(db, self.ranking, self.record, list(catalog.boards))
        self.reconciler = Reconciler(
            self.repair, interval_s=reconcile_interval_s, lag_s=reconcile_lag_s
        )
        self.seasons = SeasonClock(db, self._announce)
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

    def forget_top(self) -> None:
        """Drop this process's cached top 10 (a moderation changed it)."""
        self._top_cache = None

    def schedule_rebuild(self, board: str = ALL_TIME) -> None:
        self.repair.schedule_rebuild(board)

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
                    raise _unavailable("the database") from exc
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
            self._redis_failed("record", exc)
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
            self._top_cache = None  # read-your-writes for this process's own clients
        return recorded

    async def _announce(self, board: str, season: int) -> None:
        """A season starts: publish the board's new (empty) top 10."""
        try:
            seq = await self.ranking.publish_if_changed(board, season)
        except REDIS_ERRORS as exc:  # the first completion of the season will switch it
            self._redis_failed("reset", exc)
            return
        if seq is not None:
            metrics.TOP10_CHANGES.labels(board).inc()

    # -- reads

    async def top(self) -> list[Entry]:
        return (await self._top())[0]

    async def top_body(self) -> bytes:
        """``{"top": [...]}`` of the all-time board serialised, reused with the cached top 10."""
        return (await self._top())[1]

    async def _top(self) -> tuple[list[Entry], bytes]:
        cached = self._top_cache
        if cached is not None and time.monotonic() - cached[0] < self.top_cache_s:
            return cached[1], cached[2]
        _, top, from_redis = await self._page(ALL_TIME, None, None, 10)
        body = orjson.dumps({"top": top})
        if from_redis:  # PostgreSQL's answer is not kept: Redis is back soon, or it is not
            self._top_cache = (time.monotonic(), top, body)
        return top, body

    async def page(
        self,
        board: str,
        season: int | None,
        after: tuple[int, int, int] | None,
        limit: int,
    ) -> tuple[int, list[Entry]]:
        """``limit`` entries of a board's season (default: the current one) after the keyset
        position ``after``: from Redis for the current season's first page, else from
        PostgreSQL; (season, entries)."""
        found, entries, _ = await self._page(board, season, after, limit)
        return found, entries

    async def _page(
        self, board: str, season: int | None, after: tuple[int, int, int] | None, limit: int
    ) -> tuple[int, list[Entry], bool]:
        if season is None and after is None:
            if self.breaker.usable():
                try:
                    page = await self.ranking.page(board, 0, limit)
                except REDIS_ERRORS as exc:
                    self._redis_failed("top", exc)
                else:
                    if page is not None:
                        return page.season, page.entries, True
                    self.schedule_rebuild(board)
            else:
                metrics.REDIS_FALLBACKS.labels("top").inc()
        with answering("the leaderboard"):
            season = season or await self._current_season(board)
            found = await scores.page(self.db, scores.Source(board, season), after, limit)
        return season, found, False

    async def keyset(self, board: str, season: int, entry: Entry) -> tuple[int, int, int]:
        """Where a page ending with ``entry`` ends, for the next page's cursor."""
        with answering("the leaderboard"):
            found = await scores.page_keys(self.db, scores.Source(board, season), entry)
        # The user moved since (a later completion): continue after its new position.
        return found or (entry["score"], 0, entry["rank"])

    async def user(
        self, user_id: str, board: str = ALL_TIME, season: int | None = None
    ) -> UserView:
        view: UserView | object | None = NOT_READY
        if season is None and self.breaker.usable():
            try:
                view = await self.ranking.user(user_id, self.around, board)
            except REDIS_ERRORS as exc:
                self._redis_failed("user", exc)
            if view is NOT_READY:
                self.schedule_rebuild(board)
        if view is NOT_READY:
            with answering("the leaderboard"):
                season = season or await self._current_season(board)
                view = await scores.user_view(
                    self.db, user_id, self.around, scores.Source(board, season)
                )
        if view is None:
            raise AppError(404, "unknown_user", f"user {user_id!r} has no score yet")
        assert isinstance(view, UserView)
        return view

    async def _current_season(self, board: str) -> int:
        found = await scores.current_season(self.db, board)
        if found is None:  # seasons are written a day ahead: only if nobody wrote them
            raise unavailable(f"the current season of {board!r}")
        return found

    async def season(self, board: str, number: int | None) -> Season | None:
        """A season's span (the current one by this process's clock if ``number`` is None)."""
        if number is None:
            return self.seasons.current(board)
        if board == ALL_TIME:
            return self.seasons.current(board) if number == 1 else None
        for known in self.seasons.schedule.get(board, []):
            if known.number == number:
                return known
        with answering("the leaderboard"):
            return await scores.season(self.db, board, number)


def _rejected(status: int, code: str, message: str) -> AppError:
    metrics.REJECTED.labels(code).inc()
    return AppError(status, code, message)


def _unavailable(what: str) -> AppError:
    """PostgreSQL could not answer: 503 ``unavailable`` (counted), the one translation."""
    metrics.DB_UNAVAILABLE.inc()
    return unavailable(what)


@contextlib.contextmanager
def answering(what: str) -> Iterator[None]:
    """Run a read that needs PostgreSQL; :func:`_unavailable` if it cannot answer."""
    try:
        yield
    except DatabaseUnavailable as exc:
        raise _unavailable(what) from exc
