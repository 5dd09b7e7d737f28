"""The seasons as the API sees them, and the resets it announces.

Every API process keeps the schedule (current and upcoming seasons of every board) in memory,
writes seasons ahead every ``refresh_s`` (:func:`leaderboard.boards.write_ahead`, idempotent
and locked, so any number of processes can) and, when a season ends, publishes the board's new,
empty top 10: a reset is a membership change and viewers see it at once, even if nobody
completes anything. Every process publishes; the ranking script's season check makes the
first one count and the others no-ops, so seq stays contiguous.

Which season a completion counts in is never decided here: the award statement looks it up
on the database's clock. This clock only says when to announce and what to show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from leaderboard import metrics, supervise
from leaderboard.boards import ALL_TIME, Season, upcoming, write_ahead
from leaderboard.db.pool import Database, DatabaseUnavailable

log = logging.getLogger("leaderboard.seasons")

ALL_TIME_SEASON = Season(ALL_TIME, 1, None, None)
ANNOUNCE_DELAY_S = 0.05  # after the boundary, so a clock a little ahead does not jump early

Announce = Callable[[str, int], Awaitable[object]]


def _now() -> datetime:
    return datetime.now(UTC)


class SeasonClock:
    def __init__(self, db: Database, announce: Announce, *, refresh_s: float = 60.0) -> None:
        self.db = db
        self.announce = announce
        self.refresh_s = refresh_s
        self.schedule: dict[str, list[Season]] = {}

    async def refresh(self) -> None:
        """Write seasons ahead and reload the schedule."""
        async with self.db.connection() as conn:
            await write_ahead(conn)
            self.schedule = await upcoming(conn)

    def current(self, board: str, at: datetime | None = None) -> Season | None:
        """The board's season at ``at`` (default now) by this process's clock."""
        if board == ALL_TIME:
            return ALL_TIME_SEASON
        at = at or _now()
        return next((s for s in self.schedule.get(board, []) if s.holds(at)), None)

    def _next_boundary(self, now: datetime) -> datetime | None:
        ends = [
            s.ends_at
            for seasons in self.schedule.values()
            for s in seasons
            if s.ends_at is not None and s.ends_at > now
        ]
        return min(ends, default=None)

    async def run(self) -> None:
        """Refresh every ``refresh_s``; at each boundary, announce the boards' new seasons."""
        refreshed = asyncio.get_running_loop().time()
        while True:
            now = _now()
            boundary = self._next_boundary(now)
            wait = self.refresh_s - (asyncio.get_running_loop().time() - refreshed)
            if boundary is not None:
                wait = min(wait, (boundary - now).total_seconds() + ANNOUNCE_DELAY_S)
            await supervise.sleep(max(wait, 0.0))
            if boundary is not None and _now() >= boundary:
                await self._announce(boundary)
            if asyncio.get_running_loop().time() - refreshed >= self.refresh_s:
                refreshed = asyncio.get_running_loop().time()
                try:
                    await self.refresh()
                except (DatabaseUnavailable, OSError, asyncpg.PostgresError) as exc:
                    # The schedule in memory still holds a day: next round.
                    log.warning("could not write seasons ahead: %s", exc)

    async def _announce(self, boundary: datetime) -> None:
        for board, seasons in self.schedule.items():
            starting = next((s for s in seasons if s.starts_at == boundary), None)
            if starting is None:
                continue
            log.info("board %s: season %d starts", board, starting.number)
            metrics.SEASON_RESETS.labels(board).inc()
            try:
                await self.announce(board, starting.number)
            except Exception:  # the loop must live on; the season's first completion switches
                log.exception("announcing season %d of %s failed", starting.number, board)
        now = _now()  # drop what ended, so the next boundary is the next one
        self.schedule = {
            board: [s for s in seasons if s.ends_at is None or s.ends_at > now]
            for board, seasons in self.schedule.items()
        }
