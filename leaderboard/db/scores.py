"""Scores in PostgreSQL, the source of truth: the award transaction and the ranking queries.

The award is one statement, so one round trip and one implicit transaction: the audit row and
the score update commit together or not at all. ``ON CONFLICT DO NOTHING`` on the completion
makes a second completion of the same action a no-op (under concurrency too: the second insert
waits for the first to commit, then does nothing). Points come from the ``actions`` table.
The benchmark runs this exact text through pgbench (``AWARD_SQL``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from leaderboard.cache.ranking import Entry, UserView
from leaderboard.db.pool import Database

AWARD_SQL = """
WITH action AS (
    SELECT points FROM actions WHERE id = $2 AND active
), completion AS (
    INSERT INTO completions (user_id, action_id, points, data, request_id)
    SELECT $1, $2, points, $3::jsonb, $4 FROM action
    ON CONFLICT ON CONSTRAINT completions_once DO NOTHING
    RETURNING points
), score AS (
    INSERT INTO scores AS s (user_id, score, reached_seq, completions)
    SELECT $1, points, nextval('score_reached_seq'), 1 FROM completion
    ON CONFLICT (user_id) DO UPDATE SET
        score = s.score + EXCLUDED.score,
        reached_seq = EXCLUDED.reached_seq,
        reached_at = now(),
        completions = s.completions + 1
    RETURNING score, reached_seq
)
SELECT (SELECT points FROM action) AS action_points,
       (SELECT points FROM completion) AS awarded,
       (SELECT score FROM score) AS score,
       (SELECT reached_seq FROM score) AS reached_seq
"""

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


@dataclass(frozen=True)
class Award:
    known_action: bool
    awarded: int | None  # None: this user had already completed this action
    score: int | None
    reached_seq: int | None


async def award(
    db: Database, user_id: str, action_id: str, data_json: str, request_id: str
) -> Award:
    row = await db.fetchrow(AWARD_SQL, user_id, action_id, data_json, request_id)
    assert row is not None
    return Award(
        known_action=row["action_points"] is not None,
        awarded=row["awarded"],
        score=row["score"],
        reached_seq=row["reached_seq"],
    )


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


async def committed_scores(
    db: Database, completions: list[tuple[str, str]]
) -> list[tuple[tuple[str, str], int, int]]:
    """Of these (user, action) completions, those committed: ((user, action), score, seq)."""
    rows = await db.fetch(
        "SELECT c.user_id, c.action_id, s.score, s.reached_seq"
        " FROM unnest($1::text[], $2::text[]) AS q (user_id, action_id)"
        " JOIN completions c USING (user_id, action_id) JOIN scores s USING (user_id)",
        [user for user, _ in completions],
        [action for _, action in completions],
    )
    return [((r["user_id"], r["action_id"]), r["score"], r["reached_seq"]) for r in rows]


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
