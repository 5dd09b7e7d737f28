"""Boards and their seasons: which actions a board counts, when it resets.

A board is declared in the catalog with a reset schedule: ``never`` (the implicit ``all-time``
board, today's contract) or a cron expression in a time zone (``0 0 * * 1`` with ``UTC`` is
every Monday at midnight; six fields put seconds first; ``@hourly``, ``@daily``, ``@weekly``
(Monday, like the weekly repeat), ``@monthly`` and ``@yearly`` are shorthands). Cron is
evaluated by cronsim (Debian cron's semantics, DST included).

A season is the span between two resets. Seasons are rows written ahead of time
(:func:`declare_boards` at start, :func:`write_ahead` every minute), so the award statement
only has to find the row whose span holds the database's ``now()``: every API process agrees
at a boundary, whatever its own clock says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from cronsim import CronSim, CronSimError

log = logging.getLogger("leaderboard.boards")

ALL_TIME = "all-time"  # the implicit board: every action, never reset (today's contract)
NEVER = "never"
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 1",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}
# Seasons are written at least this far ahead (and at least MIN_AHEAD of them), but never
# more than MAX_AHEAD at once (a schedule of seconds would otherwise mean thousands of rows).
HORIZON = timedelta(days=1)
MIN_AHEAD = 2
MAX_AHEAD = 100
# pg_advisory_xact_lock key for writing seasons (migrations use another).
LOCK_KEY = 7_306_033_126_520_187_137


class ScheduleError(ValueError):
    pass


def zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC  # no tz database needed for the common case
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True)
class Board:
    id: str
    title: str
    action_ids: frozenset[str] | None = None  # None: every action counts
    reset: str = NEVER
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        self.next_reset(datetime.now(UTC))  # refuses a bad schedule or time zone

    def counts(self, action_id: str) -> bool:
        return self.action_ids is None or action_id in self.action_ids

    def next_reset(self, after: datetime) -> datetime | None:
        """The first reset strictly after ``after`` (aware), in UTC; None if it never resets."""
        if self.reset == NEVER:
            return None
        expr = ALIASES.get(self.reset, self.reset)
        local = after.astimezone(zone(self.timezone))
        try:
            fire: datetime = next(CronSim(expr, local))
        except (CronSimError, StopIteration) as exc:
            raise ScheduleError(f"bad reset schedule {self.reset!r}: {exc}") from None
        return fire.astimezone(UTC)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "actions": "all" if self.action_ids is None else sorted(self.action_ids),
            "reset": self.reset,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class Season:
    board_id: str
    number: int
    starts_at: datetime | None  # None: since the beginning (the all-time board)
    ends_at: datetime | None  # None: never ends

    def holds(self, at: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= at) and (
            self.ends_at is None or at < self.ends_at
        )

    def public(self) -> dict[str, Any]:
        """``season``, ``startsAt``, ``endsAt``: the fields every board answer carries."""
        return {
            "season": self.number,
            "startsAt": None if self.starts_at is None else self.starts_at.isoformat(),
            "endsAt": None if self.ends_at is None else self.ends_at.isoformat(),
        }


def following(board: Board, last: Season | None, now: datetime) -> Iterator[Season]:
    """The seasons after ``last`` (or the first one, starting ``now``) until the schedule is
    written far enough ahead. After a gap (nobody wrote seasons for a while) the next season
    starts where the last one ended and runs to the next reset after ``now``: one empty
    season for the time nobody could complete anything, not one row per missed reset."""
    if last is None:
        last = Season(board.id, 1, now, board.next_reset(now))
        yield last
    ahead = 0
    while last.ends_at is not None and ahead < MAX_AHEAD:
        if last.ends_at > now + HORIZON and ahead >= MIN_AHEAD:
            return
        start: datetime = last.ends_at
        last = Season(board.id, last.number + 1, start, board.next_reset(max(start, now)))
        if last.ends_at is not None and last.ends_at > now:
            ahead += 1
        yield last


Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def declare_boards(conn: Conn, boards: list[Board]) -> None:
    """At start: make the ``boards`` table match the catalog (boards no longer listed are
    deactivated, not deleted: their archived seasons stay readable) and write seasons ahead.
    A board whose schedule changed ends its current season at the new schedule's next reset
    and loses the seasons written ahead."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        now: datetime = await conn.fetchval("SELECT now()")
        for board in sorted(boards, key=lambda b: b.id):
            before = await conn.fetchrow(
                "SELECT reset, timezone FROM boards WHERE id = $1", board.id
            )
            await conn.execute(
                """
                INSERT INTO boards AS b (id, title, action_ids, reset, timezone, active)
                VALUES ($1, $2, $3, $4, $5, true)
                ON CONFLICT (id) DO UPDATE SET
                    title = EXCLUDED.title, action_ids = EXCLUDED.action_ids,
                    reset = EXCLUDED.reset, timezone = EXCLUDED.timezone, active = true
                WHERE (b.title, b.action_ids, b.reset, b.timezone, b.active) IS DISTINCT FROM
                      (EXCLUDED.title, EXCLUDED.action_ids, EXCLUDED.reset, EXCLUDED.timezone,
                       true)
                """,
                board.id,
                board.title,
                None if board.action_ids is None else sorted(board.action_ids),
                board.reset,
                board.timezone,
            )
            if before is not None and (before["reset"], before["timezone"]) != (
                board.reset,
                board.timezone,
            ):
                log.info("board %s: reset schedule changed to %r", board.id, board.reset)
                await conn.execute(
                    "DELETE FROM seasons WHERE board_id = $1 AND starts_at > $2", board.id, now
                )
                await conn.execute(
                    "UPDATE seasons SET ends_at = $3 WHERE board_id = $1 AND starts_at <= $2"
                    " AND (ends_at IS NULL OR ends_at > $2)",
                    board.id,
                    now,
                    board.next_reset(now),
                )
        await conn.execute(
            "UPDATE boards SET active = false WHERE active AND NOT (id = ANY($1::text[]))",
            [b.id for b in boards],
        )
        await _write_ahead(conn, now)


async def write_ahead(conn: Conn) -> None:
    """Every minute: write the seasons of every active board ahead, by the schedule in the
    ``boards`` table (so every process writes the same rows, whatever its own catalog)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await _write_ahead(conn, await conn.fetchval("SELECT now()"))


async def _write_ahead(conn: Conn, now: datetime) -> None:
    rows = await conn.fetch(
        "SELECT b.id, b.reset, b.timezone, s.season, s.starts_at, s.ends_at FROM boards b"
        " LEFT JOIN LATERAL (SELECT * FROM seasons WHERE board_id = b.id"
        " ORDER BY season DESC LIMIT 1) s ON true WHERE b.active ORDER BY b.id"
    )
    for row in rows:
        try:
            board = Board(row["id"], row["id"], reset=row["reset"], timezone=row["timezone"])
        except ScheduleError as exc:  # e.g. a time zone this process's tz database lacks
            log.warning("cannot write seasons of board %s ahead: %s", row["id"], exc)
            continue
        last = None
        if row["season"] is not None:
            last = Season(board.id, row["season"], row["starts_at"], row["ends_at"])
        ahead = [
            (s.board_id, s.number, s.starts_at, s.ends_at) for s in following(board, last, now)
        ]
        if ahead:
            await conn.executemany(
                "INSERT INTO seasons (board_id, season, starts_at, ends_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                ahead,
            )


async def upcoming(conn: Conn) -> dict[str, list[Season]]:
    """Per board, the current season and the ones written ahead (by start)."""
    rows = await conn.fetch(
        "SELECT s.* FROM seasons s JOIN boards b ON b.id = s.board_id AND b.active"
        " WHERE s.ends_at IS NULL OR s.ends_at > now() ORDER BY s.board_id, s.season"
    )
    found: dict[str, list[Season]] = {}
    for row in rows:
        season = Season(row["board_id"], row["season"], row["starts_at"], row["ends_at"])
        found.setdefault(row["board_id"], []).append(season)
    return found
