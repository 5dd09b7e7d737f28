"""Moderation, independent of HTTP: each action commits in PostgreSQL (with its audit row)
and then brings every Redis ranking and broadcast in line, as a completion does.

Order matters against concurrent completions. A ban or an erasure blocks the user in Redis
*after* the commit, and the block both removes them and keeps later records of them out (the
update script checks the blocked set): a completion committed before the ban and recorded
after it cannot bring them back. An unban or an adjustment sets the user's standings from
PostgreSQL after its commit; they are newer than any standing of a completion committed before
the action (PostgreSQL takes the tie-break seq under the row lock), so such a completion,
recorded late, cannot undo an adjustment that took points back. If Redis misses an adjustment
after its commit, the rankings are rebuilt as after any lost record.
"""

from __future__ import annotations

import logging
from typing import Any

from leaderboard import metrics
from leaderboard.boards import ALL_TIME
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.ranking import RankingRangeError
from leaderboard.db import moderation as db_moderation
from leaderboard.db import scores
from leaderboard.errors import AppError, invalid_request, unavailable
from leaderboard.reads import answering
from leaderboard.service import Leaderboard

log = logging.getLogger("leaderboard.moderation")

_SET_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, RankingRangeError)


class Moderation:
    def __init__(self, board: Leaderboard, *, settle_s: float) -> None:
        self.board = board
        self.db = board.db
        self.settle_s = settle_s  # how long an erasure waits for older statements

    @property
    def _boards(self) -> list[str]:
        return list(self.board.catalog.boards)

    async def ban(self, user_id: str, reason: str, actor: str) -> dict[str, Any]:
        with answering("the database"):
            await db_moderation.ban(self.db, user_id, reason, actor)
        await self._block(user_id, "the ban is in force")
        metrics.ADMIN_ACTIONS.labels("ban").inc()
        return {"userId": user_id, "banned": True, "reason": reason}

    async def unban(self, user_id: str, reason: str, actor: str) -> dict[str, Any]:
        with answering("the database"):
            changed = await db_moderation.unban(self.db, user_id, reason, actor)
            still = not changed and await db_moderation.banned(self.db, user_id)
            found = await scores.standings(self.db, users=[user_id])
        if not still:  # also when repeated after a Redis failure: the rankings catch up
            await self._set(user_id, found.get(user_id, []), self._boards, "the ban is lifted")
        if changed:
            metrics.ADMIN_ACTIONS.labels("unban").inc()
        return {"userId": user_id, "banned": False}

    async def adjust(
        self, user_id: str, points: int, reason: str, actor: str, board: str | None
    ) -> dict[str, Any]:
        board_id = board or ALL_TIME
        if board_id not in self.board.catalog.boards:
            raise AppError(404, "unknown_board", f"there is no board {board_id!r}")
        with answering("the database"):
            try:
                done = await db_moderation.adjust(self.db, user_id, points, reason, actor, board_id)
            except db_moderation.ScoreBelowZero as exc:
                raise invalid_request(str(exc)) from None
            except LookupError as exc:
                raise unavailable(str(exc)) from None
        rank = None
        if not done.banned:
            await self._set(user_id, [done.standing], [board_id], None)
            try:
                rank = (await self.board.reads.user(user_id, board_id)).rank
            except AppError:
                rank = None
        metrics.ADMIN_ACTIONS.labels("adjust").inc()
        return {
            "userId": user_id,
            "board": board_id,
            "season": done.standing.season,
            "points": points,
            "score": done.standing.score,
            "rank": rank,
        }

    async def erase(self, user_id: str, actor: str) -> dict[str, Any]:
        with answering("the database"):
            await db_moderation.block_for_erasure(self.db, user_id)
        # Out of Redis before the rows go: once they are gone, nothing could find the id again.
        await self._block(user_id, "the user is hidden but not yet erased")
        with answering("the database"):
            counts = await db_moderation.erase(self.db, user_id, actor, settle_s=self.settle_s)
        try:
            await self.board.client.delete(self.board.ranking.keys.ratelimit(user_id))
        except REDIS_ERRORS as exc:  # expires with its window anyway
            log.warning("could not drop the rate-limit key of an erased user: %s", exc)
        metrics.ADMIN_ACTIONS.labels("erase").inc()
        return {"erased": True, "deleted": counts}

    async def export(self, user_id: str) -> dict[str, Any]:
        with answering("the database"):
            found = await db_moderation.export(self.db, user_id)
        if found is None:
            raise AppError(404, "unknown_user", f"nothing is held about user {user_id!r}")
        metrics.ADMIN_ACTIONS.labels("export").inc()
        return found

    async def audit(self, cursor: str | None, limit: int) -> dict[str, Any]:
        before = None
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 19:
                raise invalid_request("bad cursor")
            before = int(cursor)
        with answering("the database"):
            entries, after = await db_moderation.audit(self.db, before, limit)
        return {"entries": entries, "next": None if after is None else str(after)}

    # -- Redis

    async def _block(self, user_id: str, recorded: str) -> None:
        try:
            await self.board.ranking.block(user_id, self._boards)
        except REDIS_ERRORS as exc:
            self._lost(exc, recorded)
        self.board.reads.forget_top()

    async def _set(
        self, user_id: str, standings: list[Any], boards: list[str], recorded: str | None
    ) -> None:
        try:
            await self.board.ranking.set_standings(user_id, standings, boards)
        except _SET_ERRORS as exc:
            if recorded is None:  # not repeatable (an adjustment): PostgreSQL has it
                # As for a missed completion: the rankings are rebuilt once Redis answers
                # (the adjustment's standing is the newer one, so a rebuild sets it even when
                # it took points back), and the reconciliation checks it meanwhile.
                log.warning("redis missed a moderation action (%s)", exc)
                metrics.REDIS_FALLBACKS.labels("moderation").inc()
                self.board.repair.stale = True
            else:
                self._lost(exc, recorded)
        self.board.reads.forget_top()

    def _lost(self, exc: BaseException, recorded: str) -> None:
        """Redis missed a repeatable moderation: PostgreSQL holds it, and the admin is told to
        repeat the request (the Redis step is redone; a rebuild cannot remove a user)."""
        log.warning("redis missed a moderation action: %s", exc)
        metrics.REDIS_FALLBACKS.labels("moderation").inc()
        raise unavailable(f"Redis ({recorded} in PostgreSQL; repeat the request once Redis answers")
