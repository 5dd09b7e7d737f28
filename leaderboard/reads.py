"""The reads of every board: from Redis while the board's ranking is complete there, else from
PostgreSQL (the source of truth), which answers the same pages, ties included.

Redis serves the current season's first pages, user views and lists of users; archived
seasons and pages after a cursor come from PostgreSQL. A Redis failure opens the
:class:`RedisBreaker` (reads go to PostgreSQL without waiting on Redis for a while); a ranking
found incomplete is handed to the repair to be rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import orjson

from leaderboard import metrics
from leaderboard.boards import ALL_TIME, Season
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.ranking import NOT_READY, Page, Ranking
from leaderboard.db import scores
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.errors import AppError, unavailable
from leaderboard.seasonclock import SeasonClock
from leaderboard.standings import Entry, UserView

log = logging.getLogger("leaderboard.service")

MAX_USERS = 100  # users ranked together (a friends list) in one read


class RedisBreaker:
    """After a Redis failure, skip Redis for ``cooldown_s`` instead of paying a timeout on
    every request; then try again."""

    def __init__(self, cooldown_s: float = 1.0) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self, operation: str, exc: BaseException) -> None:
        """Redis failed during ``operation``: logged once per opening, always counted."""
        if self.usable():
            log.warning("redis unavailable during %s: %s", operation, exc)
        self._open_until = time.monotonic() + self.cooldown_s
        metrics.REDIS_FALLBACKS.labels(operation).inc()

    def reset(self) -> None:
        """Try Redis again from now on."""
        self._open_until = 0.0


def db_unavailable(what: str) -> AppError:
    """PostgreSQL could not answer: 503 ``unavailable`` (counted), the one translation."""
    metrics.DB_UNAVAILABLE.inc()
    return unavailable(what)


@contextlib.contextmanager
def answering(what: str) -> Iterator[None]:
    """Run a read that needs PostgreSQL; :func:`db_unavailable` if it cannot answer."""
    try:
        yield
    except DatabaseUnavailable as exc:
        raise db_unavailable(what) from exc


class BoardReads:
    def __init__(
        self,
        db: Database,
        ranking: Ranking,
        breaker: RedisBreaker,
        seasons: SeasonClock,
        schedule_rebuild: Callable[[str], None],
        *,
        around: int,
        top_cache_s: float,
    ) -> None:
        self.db = db
        self.ranking = ranking
        self.breaker = breaker
        self.seasons = seasons
        self.schedule_rebuild = schedule_rebuild
        self.around = around
        self.top_cache_s = top_cache_s
        # (read at, top 10, its JSON response body) from Redis; reused for top_cache_s.
        self._top_cache: tuple[float, list[Entry], bytes] | None = None

    def forget_top(self) -> None:
        """Drop this process's cached top 10 (a completion or a moderation changed it)."""
        self._top_cache = None

    async def top(self) -> list[Entry]:
        return (await self._top())[0]

    async def top_body(self) -> bytes:
        """``{"top": [...]}`` of the all-time board serialised, reused with the cached top 10."""
        return (await self._top())[1]

    async def _top(self) -> tuple[list[Entry], bytes]:
        cached = self._top_cache
        if cached is not None and time.monotonic() - cached[0] < self.top_cache_s:
            return cached[1], cached[2]
        page = await self._redis_page(ALL_TIME, 10)
        if page is not None:
            top = page.entries
        else:
            with answering("the leaderboard"):
                top = await scores.top(self.db)
        body = orjson.dumps({"top": top})
        if page is not None:  # PostgreSQL's answer is not kept: Redis is back soon, or it is not
            self._top_cache = (time.monotonic(), top, body)
        return top, body

    async def page(
        self,
        board: str,
        season: int | None,
        after: tuple[int, int, int] | None,
        limit: int,
    ) -> Page:
        """``limit`` entries of a board's season (default: the current one) after the keyset
        position ``after``, and how many the season ranks: from Redis for the current season's
        first page, else from PostgreSQL."""
        if season is None and after is None:
            page = await self._redis_page(board, limit)
            if page is not None:
                return page
        return await self._db_page(board, limit, season, after)

    async def _redis_page(self, board: str, limit: int) -> Page | None:
        if not self.breaker.usable():
            metrics.REDIS_FALLBACKS.labels("top").inc()
            return None
        try:
            page = await self.ranking.page(board, 0, limit)
        except REDIS_ERRORS as exc:
            self.breaker.failed("top", exc)
            return None
        if page is None:
            self.schedule_rebuild(board)
        return page

    async def _db_page(
        self,
        board: str,
        limit: int,
        season: int | None = None,
        after: tuple[int, int, int] | None = None,
    ) -> Page:
        with answering("the leaderboard"):
            season = season or await self._current_season(board)
            source = scores.Source(board, season)
            found = await scores.page(self.db, source, after, limit)
            total = await scores.count(self.db, source)
        return Page(season, found, total)

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
                self.breaker.failed("user", exc)
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

    async def users(self, user_ids: list[str], board: str, season: int | None = None) -> Page:
        """The ranked ones of ``user_ids`` (a friends list) with their ranks on the whole
        season, best first, and how many it ranks: one Redis round trip for the current
        season."""
        if season is None and self.breaker.usable():
            try:
                page = await self.ranking.users(user_ids, board)
            except REDIS_ERRORS as exc:
                self.breaker.failed("users", exc)
            else:
                if page is not None:
                    return page
                self.schedule_rebuild(board)
        with answering("the leaderboard"):
            season = season or await self._current_season(board)
            source = scores.Source(board, season)
            found = await scores.users(self.db, source, user_ids)
            total = await scores.count(self.db, source)
        return Page(season, found, total)

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
