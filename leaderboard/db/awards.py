"""The award transaction, with group commit: completions that arrive while the database is busy
go to PostgreSQL together, in one statement and one transaction.

Each completion still writes its audit row and its score update in one transaction, and is
acknowledged only after that transaction committed (and, with ``synchronous_commit``, reached
the standby). What a batch shares is the round trip, the commit, its WAL flush and the wait for
the standby: the costs that dominate a small transaction. At most ``max_batches`` statements run
at once per process; a completion that finds a free slot is sent at once (no timer, so no added
latency when the database keeps up), the others wait for the next free slot and go together.

Locks are taken in (user, action) and user order in every batch, so concurrent batches cannot
deadlock one another. Ties: users who reach the same score in the same batch reached it at the
same commit; their ``reached_seq`` (the tie-break) follows the user id order. If a batch fails
with an SQL error, its completions are retried one by one so that only the one at fault fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg

from leaderboard import metrics
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.standings import Standing

log = logging.getLogger("leaderboard.db.awards")


def period_sql(repeat_s: str, at: str) -> str:
    """The period a completion at ``at`` counts in, for an action repeating every
    ``repeat_s`` seconds (SQL expressions): 0 for once-ever actions, else the number of
    whole periods since the epoch, on the database's clock; weeks start on Monday 00:00 UTC
    (the epoch was a Thursday: +3 days)."""
    return (
        f"CASE WHEN {repeat_s} = 0 THEN 0::bigint ELSE floor((extract(epoch FROM {at}) + "
        f"CASE WHEN {repeat_s} = 604800 THEN 259200 ELSE 0 END) / {repeat_s})::bigint END"
    )


# The season of board ``board`` (an SQL expression) holding ``at``, on the database's clock.
def season_sql(board: str, at: str) -> str:
    return (
        "(SELECT se.season FROM seasons se WHERE se.board_id = "  # noqa: S608 - constant fragments
        f"{board} AND se.starts_at <= {at}"
        f" AND (se.ends_at IS NULL OR {at} < se.ends_at) ORDER BY se.starts_at DESC LIMIT 1)"
    )


# One row per completion, in the order given. ON CONFLICT DO NOTHING makes a second completion
# of an action (in the same period, for a repeatable one: the database's clock decides) a
# no-op (a concurrent one waits for the first to commit, then does nothing); points come from
# the actions table. A user completing several actions in one batch gets one
# score update; each completion's `score` is what the user had right after it.
#
# The same points go to the current season of every board counting the action (board_score).
# Lock order is the same in every batch (completions by user and action, then scores by user,
# then board scores by board, season and user), so concurrent batches cannot deadlock: the
# scalar subquery over `score` makes every score row written before the first board row.
#
# The tie-break (`reached_seq`) of a row that exists is taken in DO UPDATE, that is while the
# row is locked: per row, a later commit always has a higher seq, which is how the Redis
# ranking tells a newer standing from a delayed older one (cache.ranking: "newest wins"). A
# proposed row takes one only if the row did not exist in the statement's snapshot (else 0,
# never used: the conflict path replaces it), so an update uses up one value, not two; a row
# that existed cannot be gone by the insert (only an erasure deletes, after every statement
# that could still award the user has ended).
#
# Moderation: a banned or erased user (`blocked`, as this statement's snapshot sees them) gets
# no completion. A ban that commits while the statement runs is seen by the score upsert
# (ON CONFLICT works on the latest row version): the points then go to the hidden score and
# its board rows stay hidden too, and the caller is told (`blocked`) not to rank the user.
AWARD_SQL = (
    """
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[])
        WITH ORDINALITY AS r (user_id, action_id, data, request_id, ord)
), blocked AS (
    SELECT DISTINCT r.user_id FROM req r
     WHERE EXISTS (SELECT 1 FROM scores b WHERE b.user_id = r.user_id AND b.banned)
        OR EXISTS (SELECT 1 FROM erased_users e
                    WHERE e.user_hash = sha256(convert_to(r.user_id, 'UTF8')))
), completion AS (
    INSERT INTO completions (user_id, action_id, points, data, request_id, period)
    SELECT r.user_id, r.action_id, a.points, r.data, r.request_id,
           CASE WHEN a.repeat_board IS NULL THEN {period}
                ELSE coalesce({board_season}, 0) END
      FROM req r JOIN actions a ON a.id = r.action_id AND a.active
     WHERE r.user_id NOT IN (SELECT user_id FROM blocked)
     ORDER BY r.user_id, r.action_id
    ON CONFLICT ON CONSTRAINT completions_once DO NOTHING
    RETURNING user_id, action_id, points
), gained AS (
    SELECT user_id, sum(points) AS points, count(*) AS n FROM completion GROUP BY user_id
), score AS (
    INSERT INTO scores AS s (user_id, score, reached_seq, completions)
    SELECT g.user_id, g.points,
           CASE WHEN EXISTS (SELECT 1 FROM scores x WHERE x.user_id = g.user_id) THEN 0
                ELSE nextval('score_reached_seq') END,
           g.n
      FROM gained g ORDER BY g.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        score = s.score + EXCLUDED.score,
        reached_seq = nextval('score_reached_seq'),
        reached_at = now(),
        completions = s.completions + EXCLUDED.completions
    RETURNING user_id, score, reached_seq, banned
), board_gained AS (
    SELECT b.id AS board_id, {season} AS season, c.user_id, sum(c.points) AS points,
           bool_or(s.banned) AS banned
      FROM completion c
      JOIN score s USING (user_id)
      JOIN boards b ON b.active AND (b.action_ids IS NULL OR c.action_id = ANY (b.action_ids))
     WHERE (SELECT count(*) FROM score) > 0
     GROUP BY b.id, c.user_id
), board_score AS (
    INSERT INTO board_scores AS bs (board_id, season, user_id, score, reached_seq, banned)
    SELECT g.board_id, g.season, g.user_id, g.points,
           CASE WHEN EXISTS (SELECT 1 FROM board_scores x WHERE x.board_id = g.board_id
                               AND x.season = g.season AND x.user_id = g.user_id) THEN 0
                ELSE nextval('score_reached_seq') END,
           g.banned
      FROM board_gained g WHERE g.season IS NOT NULL ORDER BY g.board_id, g.season, g.user_id
    ON CONFLICT (board_id, season, user_id) DO UPDATE SET
        score = bs.score + EXCLUDED.score,
        reached_seq = nextval('score_reached_seq'),
        reached_at = now(),
        banned = EXCLUDED.banned
    RETURNING board_id, season, user_id, score, reached_seq
), standing AS (
    SELECT user_id, array_agg(board_id ORDER BY board_id) AS boards,
           array_agg(season ORDER BY board_id) AS seasons,
           array_agg(score ORDER BY board_id) AS scores,
           array_agg(reached_seq ORDER BY board_id) AS seqs
      FROM board_score GROUP BY user_id
)
SELECT a.points AS action_points,
       c.points AS awarded,
       s.score - coalesce(sum(c.points) OVER (
           PARTITION BY r.user_id ORDER BY r.ord
           ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0) AS score,
       s.reached_seq,
       coalesce(s.banned, false) OR r.user_id IN (SELECT user_id FROM blocked) AS blocked,
       st.boards, st.seasons, st.scores AS board_scores, st.seqs AS board_seqs
  FROM req r
  LEFT JOIN actions a ON a.id = r.action_id AND a.active
  LEFT JOIN completion c USING (user_id, action_id)
  LEFT JOIN score s ON s.user_id = r.user_id AND c.user_id IS NOT NULL
  LEFT JOIN standing st ON st.user_id = r.user_id AND c.user_id IS NOT NULL
 ORDER BY r.ord
""".replace("{period}", period_sql("a.repeat_s", "now()"))
    .replace("{board_season}", season_sql("a.repeat_board", "now()"))
    .replace("{season}", season_sql("b.id", "now()"))
)


@dataclass(frozen=True)
class Completion:
    user_id: str
    action_id: str
    data_json: str
    request_id: str


@dataclass(frozen=True)
class Award:
    known_action: bool
    awarded: int | None  # None: this user had already completed this action (this period)
    score: int | None
    reached_seq: int | None
    # The user's standing on every seasonal board that counted the award.
    boards: tuple[Standing, ...] = ()
    # Banned or erased: nothing was awarded, or (a ban committed while this award ran) the
    # points went to the hidden score; either way the rankings must not show the user.
    blocked: bool = False


async def award_many(db: Database, batch: list[Completion]) -> list[Award]:
    """Award ``batch`` (no (user, action) twice) in one transaction; one Award per entry."""
    rows = await db.fetch(
        AWARD_SQL,
        [c.user_id for c in batch],
        [c.action_id for c in batch],
        [c.data_json for c in batch],
        [c.request_id for c in batch],
    )
    return [
        Award(
            known_action=r["action_points"] is not None,
            awarded=r["awarded"],
            score=r["score"],
            reached_seq=r["reached_seq"],
            boards=_standings(r),
            blocked=r["blocked"],
        )
        for r in rows
    ]


def _standings(row: asyncpg.Record) -> tuple[Standing, ...]:
    if row["boards"] is None:
        return ()
    return tuple(
        Standing(*values)
        for values in zip(
            row["boards"], row["seasons"], row["board_scores"], row["board_seqs"], strict=True
        )
    )


async def committed(db: Database, completions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Of these (user, action) completions, those committed (in any period)."""
    rows = await db.fetch(
        "SELECT DISTINCT c.user_id, c.action_id"
        " FROM unnest($1::text[], $2::text[]) AS q (user_id, action_id)"
        " JOIN completions c USING (user_id, action_id)",
        [user for user, _ in completions],
        [action for _, action in completions],
    )
    return [(r["user_id"], r["action_id"]) for r in rows]


async def by_request(
    db: Database, user_id: str, action_id: str, request_id: str
) -> tuple[int, int] | None:
    """(points, the user's score now) if this request's completion committed: an attempt
    whose outcome was unknown may have, and a retry of it must answer as it would have."""
    row = await db.fetchrow(
        "SELECT c.points, s.score FROM completions c JOIN scores s USING (user_id)"
        " WHERE c.user_id = $1 AND c.action_id = $2 AND c.request_id = $3"
        " ORDER BY c.id DESC LIMIT 1",
        user_id,
        action_id,
        request_id,
    )
    return None if row is None else (int(row["points"]), int(row["score"]))


# A completion, the future its caller awaits, and when it was queued (time.monotonic()).
_Pending = tuple[Completion, "asyncio.Future[Award]", float]


class AwardBatcher:
    def __init__(self, db: Database, *, max_batches: int = 2, max_batch: int = 128) -> None:
        self.db = db
        self.max_batches = max_batches
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._running: set[asyncio.Task[None]] = set()

    async def award(self, completion: Completion) -> Award:
        """Award one completion; :class:`DatabaseUnavailable` if its outcome is unknown."""
        future: asyncio.Future[Award] = asyncio.get_running_loop().create_future()
        self._queue.append((completion, future, time.monotonic()))
        self._dispatch()
        # Bounded: a queued completion waits for a running batch (itself bounded by the
        # database timeout), then for its own.
        try:
            return await asyncio.wait_for(future, 2 * self.db.timeout + 1)
        except TimeoutError:
            raise DatabaseUnavailable("the award did not complete in time") from None

    async def close(self) -> None:
        """Wait for the batches in flight (their completions are answered)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _dispatch(self) -> None:
        while self._queue and len(self._running) < self.max_batches:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            batch = [p for p in batch if not p[1].done()]  # the caller gave up
            if not batch:
                continue
            now = time.monotonic()
            for _, _, queued in batch:
                metrics.AWARD_QUEUE.observe(now - queued)
            task = asyncio.create_task(self._run(batch), name="award-batch")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._dispatch()

    async def _run(self, pending: list[_Pending]) -> None:
        try:
            await self._award(pending)
        except BaseException as exc:  # unavailable, cancelled: every unanswered one alike
            _fail(pending, exc)
            if not isinstance(exc, Exception):
                raise

    async def _award(self, pending: list[_Pending]) -> None:
        # A repeated (user, action) goes once; its repeats share the outcome of the first.
        first: dict[tuple[str, str], int] = {}
        unique: list[Completion] = []
        for completion, _, _ in pending:
            key = (completion.user_id, completion.action_id)
            if key not in first:
                first[key] = len(unique)
                unique.append(completion)
        metrics.AWARD_BATCH.observe(len(unique))
        started = time.monotonic()
        try:
            awards: list[Award | None] = list(await award_many(self.db, unique))
            metrics.AWARD_TRANSACTION.observe(time.monotonic() - started)
        except asyncpg.PostgresError as exc:
            if len(unique) == 1:
                raise
            log.warning("award batch of %d failed (%s); awarding one by one", len(unique), exc)
            awards = []
            for completion in unique:
                try:
                    awards.append((await award_many(self.db, [completion]))[0])
                except asyncpg.PostgresError as one:
                    key = (completion.user_id, completion.action_id)
                    _fail([p for p in pending if (p[0].user_id, p[0].action_id) == key], one)
                    awards.append(None)
        sent: set[int] = set()
        for completion, future, _ in pending:
            index = first[completion.user_id, completion.action_id]
            award = awards[index]
            if award is not None and index in sent:  # a repeat: the first one took it
                award = Award(award.known_action, None, None, None)
            sent.add(index)
            if award is not None and not future.done():
                future.set_result(award)


def _fail(pending: list[_Pending], exc: BaseException) -> None:
    for _, future, _ in pending:
        if not future.done():
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()
