"""Scores in PostgreSQL, the source of truth: the ranking queries (the award transaction is
in :mod:`leaderboard.db.awards`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from leaderboard.cache.ranking import Entry, UserView
from leaderboard.db.pool import Database

TOP_SQL = """
SELECT user_id, score FROM scores ORDER BY score DESC, reached_seq ASC LIMIT $1
"""

USER_SQL = """
SELECT s.score, s.reached_seq,
       (SELECT count(*) FROM scores o
         WHERE o.score > s.score OR (o.score = s.score AND o.reached_seq < s.reached_seq)) + 1
       AS rank
  FROM scores s WHERE s.user_id = $1
"""

ABOVE_SQL = """
SELECT user_id, score FROM scores
 WHERE score > $1 OR (score = $1 AND reached_seq < $2)
 ORDER BY score ASC, reached_seq DESC LIMIT $3
"""

BELOW_SQL = """
SELECT user_id, score FROM scores
 WHERE score < $1 OR (score = $1 AND reached_seq > $2)
 ORDER BY score DESC, reached_seq ASC LIMIT $3
"""


async def top(db: Database, n: int = 10) -> list[Entry]:
    rows = await db.fetch(TOP_SQL, n)
    return [{"rank": i, "userId": r["user_id"], "score": r["score"]} for i, r in enumerate(rows, 1)]


async def user_view(db: Database, user_id: str, radius: int) -> UserView | None:
    async with db.connection() as conn:
        me = await conn.fetchrow(USER_SQL, user_id, timeout=db.timeout)
        if me is None:
            return None
        score, seq, rank = me["score"], me["reached_seq"], me["rank"]
        above = await conn.fetch(ABOVE_SQL, score, seq, radius, timeout=db.timeout)
        below = await conn.fetch(BELOW_SQL, score, seq, radius, timeout=db.timeout)
    around: list[Entry] = [
        {"rank": rank - i, "userId": r["user_id"], "score": r["score"]}
        for i, r in reversed(list(enumerate(above, 1)))
    ]
    around.append({"rank": rank, "userId": user_id, "score": score})
    around += [
        {"rank": rank + i, "userId": r["user_id"], "score": r["score"]}
        for i, r in enumerate(below, 1)
    ]
    return UserView(user_id=user_id, score=score, rank=rank, around=around)


async def all_scores(db: Database, batch: int = 5000) -> AsyncIterator[list[tuple[str, int, int]]]:
    """Every score, in keyset-paginated batches (for rebuilding the Redis ranking)."""
    after = ""
    while True:
        rows = await db.fetch(
            "SELECT user_id, score, reached_seq FROM scores WHERE user_id > $1 "
            "ORDER BY user_id LIMIT $2",
            after,
            batch,
        )
        if not rows:
            return
        yield [(r["user_id"], r["score"], r["reached_seq"]) for r in rows]
        after = rows[-1]["user_id"]
