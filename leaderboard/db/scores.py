"""Scores in PostgreSQL, the source of truth: the ranking queries, the same for every board
(the award transaction is in :mod:`leaderboard.db.awards`).

A board's season is a :class:`Source`: the all-time board is the ``scores`` table, every other
board's season the rows of ``board_scores`` with that board and season. Order everywhere:
``score DESC, reached_seq ASC`` (who reached a score first ranks higher), which both tables'
ranking indexes serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from leaderboard.boards import ALL_TIME, Season
from leaderboard.db.awards import season_sql
from leaderboard.db.pool import Database
from leaderboard.standings import Entry, Standing, UserView


@dataclass(frozen=True)
class Source:
    board: str = ALL_TIME
    season: int = 1

    def rows(self, first: int) -> tuple[str, list[Any]]:
        """``FROM ... WHERE ...`` selecting this season's rows, its parameters numbered from
        ``$first``."""
        # Banned users' rows are kept (an unban restores them) but never ranked.
        if self.board == ALL_TIME:
            return "scores WHERE NOT banned", []
        return (
            f"board_scores WHERE NOT banned AND board_id = ${first} AND season = ${first + 1}",
            [self.board, self.season],
        )


async def top(db: Database, n: int = 10, source: Source | None = None) -> list[Entry]:
    return await page(db, source or Source(), None, n)


async def page(
    db: Database, source: Source, after: tuple[int, int, int] | None, limit: int
) -> list[Entry]:
    """``limit`` entries after the entry (score, reached_seq, rank) ``after`` (keyset: a page
    never repeats or skips an entry that did not move in between)."""
    if after is None:
        rows_sql, args = source.rows(2)
        found = await db.fetch(
            f"SELECT user_id, score FROM {rows_sql} ORDER BY score DESC, reached_seq LIMIT $1",
            limit,
            *args,
        )
        first_rank = 1
    else:
        score, seq, rank = after
        rows_sql, args = source.rows(4)
        found = await db.fetch(
            f"SELECT user_id, score FROM {rows_sql}"
            " AND (score < $1 OR (score = $1 AND reached_seq > $2))"
            " ORDER BY score DESC, reached_seq LIMIT $3",
            score,
            seq,
            limit,
            *args,
        )
        first_rank = rank + 1
    return [
        {"rank": first_rank + i, "userId": r["user_id"], "score": r["score"]}
        for i, r in enumerate(found)
    ]


async def page_keys(db: Database, source: Source, entry: Entry) -> tuple[int, int, int] | None:
    """The keyset position (score, reached_seq, rank) of ``entry``, for a cursor."""
    rows_sql, args = source.rows(2)
    row = await db.fetchrow(
        f"SELECT reached_seq FROM {rows_sql} AND user_id = $1", entry["userId"], *args
    )
    return None if row is None else (entry["score"], int(row["reached_seq"]), entry["rank"])


async def user_view(
    db: Database, user_id: str, radius: int, source: Source | None = None
) -> UserView | None:
    source = source or Source()
    me_rows, me_args = source.rows(2)
    count_rows, count_args = source.rows(3)
    near_rows, near_args = source.rows(4)
    async with db.connection() as conn:
        me = await conn.fetchrow(
            f"SELECT score, reached_seq FROM {me_rows} AND user_id = $1",
            user_id,
            *me_args,
            timeout=db.timeout,
        )
        if me is None:
            return None
        score, seq = me["score"], me["reached_seq"]
        total_rows, total_args = source.rows(1)
        total = await conn.fetchval(
            f"SELECT count(*) FROM {total_rows}", *total_args, timeout=db.timeout
        )
        rank = 1 + await conn.fetchval(
            f"SELECT count(*) FROM {count_rows} AND (score > $1 OR (score = $1 AND "
            "reached_seq < $2))",
            score,
            seq,
            *count_args,
            timeout=db.timeout,
        )
        above = await conn.fetch(
            f"SELECT user_id, score FROM {near_rows} AND (score > $1 OR (score = $1 AND "
            "reached_seq < $2)) ORDER BY score ASC, reached_seq DESC LIMIT $3",
            score,
            seq,
            radius,
            *near_args,
            timeout=db.timeout,
        )
        below = await conn.fetch(
            f"SELECT user_id, score FROM {near_rows} AND (score < $1 OR (score = $1 AND "
            "reached_seq > $2)) ORDER BY score DESC, reached_seq ASC LIMIT $3",
            score,
            seq,
            radius,
            *near_args,
            timeout=db.timeout,
        )
    around: list[Entry] = [
        {"rank": rank - i, "userId": r["user_id"], "score": r["score"]}
        for i, r in reversed(list(enumerate(above, 1)))
    ]
    around.append({"rank": rank, "userId": user_id, "score": score})
    around += [
        {"rank": rank + i, "userId": r["user_id"], "score": r["score"]}
        for i, r in enumerate(below, 1)
    ]
    return UserView(user_id, score, rank, around, source.season, total)


async def count(db: Database, source: Source) -> int:
    """How many users the season ranks."""
    rows_sql, args = source.rows(1)
    row = await db.fetchrow(f"SELECT count(*) AS n FROM {rows_sql}", *args)
    assert row is not None
    return int(row["n"])


async def users(db: Database, source: Source, user_ids: list[str]) -> list[Entry]:
    """The ranked ones of ``user_ids`` with their ranks on the whole season, best first."""
    rows_sql, args = source.rows(2)  # both the users' rows and the rows above them
    found = await db.fetch(
        f"SELECT me.user_id, me.score, 1 + (SELECT count(*) FROM {rows_sql}"
        " AND (score > me.score OR (score = me.score AND reached_seq < me.reached_seq)))"
        f" AS rank FROM (SELECT user_id, score, reached_seq FROM {rows_sql}"
        " AND user_id = ANY($1)) AS me ORDER BY rank",
        user_ids,
        *args,
    )
    return [{"rank": r["rank"], "userId": r["user_id"], "score": r["score"]} for r in found]


async def all_scores(
    db: Database, source: Source | None = None, batch: int = 5000
) -> AsyncIterator[list[tuple[str, int, int]]]:
    """Every score of a season, in keyset-paginated batches (for rebuilding the Redis
    ranking)."""
    rows_sql, args = (source or Source()).rows(3)
    after = ""
    while True:
        rows = await db.fetch(
            f"SELECT user_id, score, reached_seq FROM {rows_sql} AND user_id > $1 "
            "ORDER BY user_id LIMIT $2",
            after,
            batch,
            *args,
        )
        if not rows:
            return
        yield [(r["user_id"], r["score"], r["reached_seq"]) for r in rows]
        after = rows[-1]["user_id"]


CURRENT_SEASON_SQL = f"SELECT {season_sql('$1', 'now()')} AS season"


async def current_season(db: Database, board: str) -> int | None:
    """The board's season holding the database's now() (None: none is written)."""
    if board == ALL_TIME:
        return 1
    row = await db.fetchrow(CURRENT_SEASON_SQL, board)
    return None if row is None or row["season"] is None else int(row["season"])


async def season(db: Database, board: str, number: int) -> Season | None:
    row = await db.fetchrow(
        "SELECT * FROM seasons WHERE board_id = $1 AND season = $2", board, number
    )
    if row is None:
        return None
    return Season(board, number, row["starts_at"], row["ends_at"])


# Standings on the all-time board and on the current season of every board (by the
# database's clock), of the users given ($1) or of those who reached them recently ($1, in
# seconds): two statements, so that each plan uses its index (a generic plan of one statement
# with "$1 IS NULL OR ..." could not).
def _standings_sql(scores_where: str, boards_where: str) -> str:
    return f"""
SELECT '{ALL_TIME}' AS board, 1 AS season, user_id, score, reached_seq FROM scores
 WHERE NOT banned AND {scores_where}
UNION ALL
SELECT bs.board_id, bs.season, bs.user_id, bs.score, bs.reached_seq
  FROM boards b JOIN board_scores bs
    ON bs.board_id = b.id AND bs.season = {season_sql("b.id", "now()")}
 WHERE b.active AND NOT bs.banned AND {boards_where}
"""


STANDINGS_OF_USERS_SQL = _standings_sql("user_id = ANY ($1::text[])", "bs.user_id = ANY ($1)")
STANDINGS_REACHED_SQL = _standings_sql(
    "reached_at > now() - make_interval(secs => $1::float8)",
    "bs.reached_at > now() - make_interval(secs => $1)",
)


async def standings(
    db: Database, *, users: list[str] | None = None, within_s: float | None = None
) -> dict[str, list[Standing]]:
    """Per user, the ranking updates that bring Redis to PostgreSQL's state (all-time first):
    of ``users``, or of every user who reached a score in the last ``within_s``."""
    if users is not None:
        rows = await db.fetch(STANDINGS_OF_USERS_SQL, users)
    elif within_s is not None:
        rows = await db.fetch(STANDINGS_REACHED_SQL, within_s)
    else:
        raise ValueError("standings of which users?")
    found: dict[str, list[Standing]] = {}
    for r in rows:
        found.setdefault(r["user_id"], []).append(
            Standing(r["board"], r["season"], r["score"], r["reached_seq"])
        )
    return found
