"""Moderation in PostgreSQL: bans, adjustments, erasure, export and the admin audit log.

Each action is one transaction with its audit row. A ban hides the user's rows (``banned``)
rather than moving them, so an unban restores the exact score and tie-break; the scores row is
where a ban and a concurrent award meet (both lock it), see :mod:`leaderboard.db.awards`.

An erasure has two transactions. The first blocks the user (the ban's flags, plus the hash of
the id in ``erased_users``, which the award reads); then it waits until no statement that
began before that commit is still running (``backend_xmin``), since such a statement could
not see the block and might still write the user's rows; the second deletes every row that
holds the id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from leaderboard.boards import ALL_TIME
from leaderboard.db.awards import season_sql
from leaderboard.db.pool import Database
from leaderboard.standings import Standing

if TYPE_CHECKING:
    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


class ScoreBelowZero(Exception):
    """An adjustment would take the score below 0."""


def user_hash(user_id: str) -> bytes:
    return hashlib.sha256(user_id.encode()).digest()


async def _audit(
    conn: Conn,
    actor: str,
    action: str,
    subject: str | None,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> int:
    audit_id: int = await conn.fetchval(
        "INSERT INTO admin_audit (actor, action, subject, reason, detail)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
        actor,
        action,
        subject,
        reason,
        orjson.dumps(detail or {}).decode(),
    )
    return audit_id


async def _hide(conn: Conn, user_id: str) -> None:
    """Flag every row of the user as banned (a row of score 0 if they have none yet, so that
    a concurrent first award meets it)."""
    await conn.execute(
        "INSERT INTO scores (user_id, score, reached_seq, banned)"
        " VALUES ($1, 0, nextval('score_reached_seq'), true)"
        " ON CONFLICT (user_id) DO UPDATE SET banned = true",
        user_id,
    )
    await conn.execute("UPDATE board_scores SET banned = true WHERE user_id = $1", user_id)


async def ban(db: Database, user_id: str, reason: str, actor: str) -> None:
    async with db.connection() as conn, conn.transaction():
        await _hide(conn, user_id)
        await conn.execute(
            "INSERT INTO bans (user_id, reason, banned_by) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason,"
            " banned_by = EXCLUDED.banned_by, banned_at = now()",
            user_id,
            reason,
            actor,
        )
        await _audit(conn, actor, "ban", user_id, reason)


async def unban(db: Database, user_id: str, reason: str, actor: str) -> bool:
    """False if the user was not banned (nothing changes)."""
    async with db.connection() as conn, conn.transaction():
        if await conn.fetchval("DELETE FROM bans WHERE user_id = $1 RETURNING 1", user_id) is None:
            return False
        await conn.execute("UPDATE scores SET banned = false WHERE user_id = $1", user_id)
        await conn.execute("UPDATE board_scores SET banned = false WHERE user_id = $1", user_id)
        # The placeholder row of a user banned before their first completion goes again.
        await conn.execute(
            "DELETE FROM scores s WHERE user_id = $1 AND completions = 0 AND score = 0"
            " AND NOT EXISTS (SELECT 1 FROM adjustments a WHERE a.user_id = s.user_id)",
            user_id,
        )
        await _audit(conn, actor, "unban", user_id, reason)
    return True


async def hidden(db: Database, users: list[str]) -> set[str]:
    """Of ``users``, those no ranking may show: banned, or erased or being erased."""
    rows = await db.fetch(
        "SELECT u FROM unnest($1::text[]) AS u WHERE"
        " EXISTS (SELECT 1 FROM bans b WHERE b.user_id = u)"
        " OR EXISTS (SELECT 1 FROM scores s WHERE s.user_id = u AND s.banned)"
        " OR EXISTS (SELECT 1 FROM erased_users e"
        "            WHERE e.user_hash = sha256(convert_to(u, 'UTF8')))",
        users,
    )
    return {r["u"] for r in rows}


async def banned(db: Database, user_id: str) -> bool:
    row = await db.fetchrow("SELECT 1 FROM bans WHERE user_id = $1", user_id)
    return row is not None


@dataclass(frozen=True)
class Adjusted:
    standing: Standing
    banned: bool


async def adjust(
    db: Database, user_id: str, points: int, reason: str, actor: str, board: str = ALL_TIME
) -> Adjusted:
    """Add ``points`` (negative: take back) to the user's score on ``board`` (its current
    season); the new standing. :class:`ScoreBelowZero` if it would go below 0, LookupError
    if the board has no current season."""
    async with db.connection() as conn, conn.transaction():
        try:
            row = await _add_points(conn, user_id, points, board)
        except asyncpg.CheckViolationError:
            raise ScoreBelowZero(f"the score of {user_id!r} would fall below 0") from None
        assert row is not None
        await conn.execute(
            "INSERT INTO adjustments (user_id, board_id, season, points, reason, actor)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            user_id,
            None if board == ALL_TIME else board,
            None if board == ALL_TIME else row["season"],
            points,
            reason,
            actor,
        )
        standing = Standing(board, row["season"], row["score"], row["reached_seq"])
        await _audit(
            conn, actor, "adjust", user_id, reason,
            {"board": board, "season": standing.season, "points": points, "score": standing.score},
        )  # fmt: skip
    return Adjusted(standing, row["banned"])


async def _add_points(conn: Conn, user_id: str, points: int, board: str) -> asyncpg.Record:
    """The user's row on the board (its current season) with ``points`` added: an update,
    or an insert for a user with no row (a CHECK is tested on the row an upsert proposes, so
    a negative upsert would fail even where the update would not)."""
    if board == ALL_TIME:
        update = (
            "UPDATE scores SET score = score + $2, reached_seq = nextval('score_reached_seq'),"
            " reached_at = now() WHERE user_id = $1 RETURNING 1 AS season, score, reached_seq,"
            " banned"
        )
        insert = (
            "INSERT INTO scores (user_id, score, reached_seq) VALUES"
            " ($1, $2, nextval('score_reached_seq')) RETURNING 1 AS season, score, reached_seq,"
            " banned"
        )
        args: list[Any] = [user_id, points]
    else:
        season = await conn.fetchval(f"SELECT {season_sql('$1', 'now()')}", board)
        if season is None:
            raise LookupError(f"board {board!r} has no current season")
        update = (
            "UPDATE board_scores SET score = score + $4, reached_seq ="
            " nextval('score_reached_seq'), reached_at = now() WHERE board_id = $1 AND"
            " season = $2 AND user_id = $3 RETURNING season, score, reached_seq, banned"
        )
        insert = (
            "INSERT INTO board_scores (board_id, season, user_id, score, reached_seq, banned)"
            " VALUES ($1, $2, $3, $4, nextval('score_reached_seq'),"
            " coalesce((SELECT banned FROM scores WHERE user_id = $3), false))"
            " RETURNING season, score, reached_seq, banned"
        )
        args = [board, season, user_id, points]
    for _ in range(3):  # an award may insert the row between the two
        row = await conn.fetchrow(update, *args)
        if row is not None:
            return row
        try:
            async with conn.transaction():  # a savepoint: the outer transaction goes on
                row = await conn.fetchrow(insert, *args)
        except asyncpg.UniqueViolationError:
            continue
        assert row is not None
        return row
    raise asyncpg.UniqueViolationError("the row kept appearing")


async def block_for_erasure(db: Database, user_id: str) -> None:
    """The first step of an erasure: no award counts for the user from now on, and every row
    is hidden."""
    async with db.connection() as conn, conn.transaction():
        await _hide(conn, user_id)
        await conn.execute(
            "INSERT INTO erased_users (user_hash) VALUES ($1) ON CONFLICT DO NOTHING",
            user_hash(user_id),
        )


async def erase(db: Database, user_id: str, actor: str, *, settle_s: float) -> dict[str, int]:
    """Delete every row that holds the user's id (after :func:`block_for_erasure`); what was
    erased, counted (also in the audit log, without the id). Waits up to ``settle_s`` for
    statements that began before the block."""
    async with db.connection() as conn:
        # Any snapshot taken before now may predate the block; wait until none is left.
        now_xid = await conn.fetchval("SELECT txid_current() % 4294967296")
        await _settle(conn, int(now_xid), settle_s)
        async with conn.transaction():
            counts = {}
            for table in ("completions", "board_scores", "scores", "adjustments", "bans"):
                done = await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)  # noqa: S608 - constant names
                counts[table] = int(done.split()[-1])
            await conn.execute("UPDATE admin_audit SET subject = NULL WHERE subject = $1", user_id)
            await _audit(conn, actor, "erase", None, "", counts)
    return counts


async def _settle(conn: Conn, xid: int, within_s: float) -> None:
    """Wait until no other session holds a snapshot taken before transaction ``xid`` ended."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        older = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND backend_xmin IS NOT NULL"
            " AND age(backend_xmin) >= age($1::text::xid)",
            str(xid),
        )
        if not older:
            return
        await asyncio.sleep(0.02)


async def export(db: Database, user_id: str) -> dict[str, Any] | None:
    """Everything held about the user, as one JSON-ready document (None: nothing)."""
    async with db.connection() as conn:
        score = await conn.fetchrow(
            "SELECT score, completions, reached_at, banned FROM scores WHERE user_id = $1",
            user_id,
        )
        boards = await conn.fetch(
            "SELECT board_id, season, score, reached_at FROM board_scores WHERE user_id = $1"
            " ORDER BY board_id, season",
            user_id,
        )
        completions = await conn.fetch(
            "SELECT action_id, points, data::text AS data, request_id, completed_at"
            " FROM completions WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        adjustments = await conn.fetch(
            "SELECT board_id, season, points, reason, actor, created_at FROM adjustments"
            " WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        ban_row = await conn.fetchrow(
            "SELECT reason, banned_by, banned_at FROM bans WHERE user_id = $1", user_id
        )
    if score is None and not boards and not completions and not adjustments and ban_row is None:
        return None
    return {
        "userId": user_id,
        "score": None if score is None else score["score"],
        "banned": None if ban_row is None else {
            "reason": ban_row["reason"], "by": ban_row["banned_by"],
            "at": _iso(ban_row["banned_at"]),
        },
        "boards": [
            {"board": r["board_id"], "season": r["season"], "score": r["score"],
             "reachedAt": _iso(r["reached_at"])}
            for r in boards
        ],
        "completions": [
            {"actionId": r["action_id"], "points": r["points"], "data": orjson.loads(r["data"]),
             "requestId": r["request_id"], "completedAt": _iso(r["completed_at"])}
            for r in completions
        ],
        "adjustments": [
            {"board": r["board_id"] or ALL_TIME, "season": r["season"] or 1,
             "points": r["points"], "reason": r["reason"], "by": r["actor"],
             "at": _iso(r["created_at"])}
            for r in adjustments
        ],
    }  # fmt: skip


async def audit(
    db: Database, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Admin audit entries, newest first, with ids below ``before``; (entries, next cursor)."""
    rows = await db.fetch(
        "SELECT id, at, actor, action, subject, reason, detail::text AS detail FROM admin_audit"
        " WHERE $1::bigint IS NULL OR id < $1 ORDER BY id DESC LIMIT $2",
        before,
        limit + 1,
    )
    entries = [
        {"id": r["id"], "at": _iso(r["at"]), "actor": r["actor"], "action": r["action"],
         "userId": r["subject"], "reason": r["reason"], "detail": orjson.loads(r["detail"])}
        for r in rows[:limit]
    ]  # fmt: skip
    return entries, (rows[limit - 1]["id"] if len(rows) > limit else None)


def _iso(value: Any) -> str:
    text: str = value.isoformat().replace("+00:00", "Z")
    return text
