"""Keeping the Redis rankings in step with PostgreSQL, for every board alike.

- Rebuild: a board whose ranking is incomplete in Redis (lost, flushed, never built, or
  invalidated after a missed record) is reloaded from its current season in PostgreSQL, one
  rebuild per board at a time across all API processes; reads use PostgreSQL meanwhile. Only a
  rebuild begun in the ranking's current generation may mark it complete
  (:mod:`leaderboard.cache.generation`). Every process looks each second for boards left
  incomplete (a rebuild that failed, or that another process gave up) and rebuilds them.
- Uncertain completions: an award that failed on a timeout may still commit (its commit may
  be waiting for the synchronous standby). Such completions are looked for in PostgreSQL every
  second for a while, and put into the rankings when they show up.
- Catch-up: a process killed between a commit and its Redis update leaves nothing to look
  for; its successor (every API process, at start) compares what was reached in the last
  ``CATCH_UP_S`` with the rankings and records what they lack (found by the chaos campaign:
  a kill -9 of the API left a committed completion out of Redis for good).
- Reconciliation (:mod:`leaderboard.reconcile`): whatever was missed and by whom, every
  completion is checked against the rankings a few seconds after it was written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from leaderboard import metrics, supervise
from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.cache.ranking import Ranking, RankingRangeError, encode, reached_seq
from leaderboard.db import moderation as db_moderation
from leaderboard.db import scores
from leaderboard.db.awards import committed
from leaderboard.db.pool import Database, DatabaseUnavailable
from leaderboard.standings import Standing

log = logging.getLogger("leaderboard.repair")

UNCERTAIN_MAX = 10_000  # completions with an unknown outcome followed at once
UNCERTAIN_TTL_S = 300.0  # how long one is looked for
CATCH_UP_S = 300.0  # at start: scores reached this recently are checked against the rankings

ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, DatabaseUnavailable)

Record = Callable[[str, list[Standing]], Awaitable[object]]


class Repair:
    def __init__(self, db: Database, ranking: Ranking, record: Record, boards: list[str]) -> None:
        self.db = db
        self.ranking = ranking
        self.record = record  # the write path's guarded ranking update
        self.boards = boards
        self._rebuilds: dict[str, asyncio.Task[None]] = {}
        # A completion committed while Redis was unreachable: the rankings miss it.
        self.stale = False
        # (user, action) whose award failed with an unknown outcome -> when (monotonic).
        self._uncertain: dict[tuple[str, str], float] = {}
        for board in boards:  # at 0 from the start, so that increase() sees the first
            for via in ("catch_up", "reconcile"):
                metrics.REPAIRED.labels(board, via)

    async def stop(self) -> None:
        for task in self._rebuilds.values():
            task.cancel()
        await asyncio.gather(*self._rebuilds.values(), return_exceptions=True)

    # -- rebuilds

    def schedule_rebuild(self, board: str) -> None:
        task = self._rebuilds.get(board)
        if task is None or task.done():
            self._rebuilds[board] = asyncio.create_task(
                self._rebuild_once(board), name=f"ranking-rebuild-{board}"
            )

    def schedule_all(self) -> None:
        for board in self.boards:
            self.schedule_rebuild(board)

    async def _rebuild_once(self, board: str) -> None:
        try:
            if await self.ranking.is_ready(board):
                return
            season = await scores.current_season(self.db, board)
            if season is None:
                log.warning("board %s has no current season written yet", board)
                return
            source = scores.Source(board, season)
            result = await self.ranking.rebuild(
                board, season, lambda: scores.all_scores(self.db, source)
            )
        except ERRORS as exc:
            log.warning("ranking rebuild of %s failed: %s", board, exc)
            metrics.REBUILDS.labels("failed").inc()
            self.stale = True  # try again once both are back
            return
        metrics.REBUILDS.labels(result).inc()
        if result == "done":
            log.info("ranking of %s (season %d) rebuilt from PostgreSQL", board, season)
        elif result == "superseded":
            log.info("ranking rebuild of %s superseded; the next sweep starts again", board)

    async def _sweep(self) -> None:
        """Rebuild every board whose ranking is incomplete and not being rebuilt here."""
        for board in self.boards:
            task = self._rebuilds.get(board)
            if (task is None or task.done()) and not await self.ranking.is_ready(board):
                self.schedule_rebuild(board)

    # -- recording what the rankings lack

    async def record_lacking(self, found: dict[str, list[Standing]], via: str) -> int:
        """Record the standings of ``found`` that the rankings lack or hold older ones of
        (idempotent: the update keeps the newest); how many users were recorded."""
        by_board: dict[str, list[tuple[str, Standing]]] = {}
        for user, updates in found.items():
            for update in updates:
                by_board.setdefault(update.board, []).append((user, update))
        lacking: dict[str, list[Standing]] = {}
        for board, pairs in by_board.items():
            key = self.ranking.keys.board(board).scores
            for i in range(0, len(pairs), 1000):
                chunk = pairs[i : i + 1000]
                held = await self.ranking.client.zmscore(key, [user for user, _ in chunk])
                for (user, update), composite in zip(chunk, held, strict=True):
                    if _behind(composite, update):
                        lacking.setdefault(user, []).append(update)
                        metrics.REPAIRED.labels(board, via).inc()
        for user, updates in lacking.items():
            await self.record(user, updates)
        return len(lacking)

    async def moderate_lacking(self, users: list[str]) -> None:
        """Carry out again the Redis step of bans and unbans of ``users`` from PostgreSQL's
        state (idempotent): a hidden user is blocked, one no longer hidden let back in with
        their standings. A ban or unban whose process died after its commit, or whose Redis
        failed, converges so without anyone repeating it."""
        hidden = await db_moderation.hidden(self.db, users)
        shown = [u for u in users if u not in hidden]
        found = await scores.standings(self.db, users=shown) if shown else {}
        for user in users:
            if user in hidden:
                await self.ranking.block(user, self.boards)
            else:
                await self.ranking.set_standings(user, found.get(user, []), self.boards)

    async def catch_up(self, window_s: float) -> int:
        """Record the standings reached in the last ``window_s`` that the rankings lack."""
        try:
            found = await scores.standings(self.db, within_s=window_s)
            recorded = await self.record_lacking(found, "catch_up")
        except ERRORS as exc:  # a rebuild follows once both answer again
            log.warning("ranking catch-up failed: %s", exc)
            self.stale = True
            return 0
        if recorded:
            log.info("ranking catch-up: recorded %d users the rankings lacked", recorded)
        return recorded

    # -- uncertain completions

    def outcome_unknown(self, user_id: str, action_id: str) -> None:
        if len(self._uncertain) >= UNCERTAIN_MAX:
            self.stale = True  # too many to follow one by one: rebuild instead
            return
        self._uncertain.setdefault((user_id, action_id), time.monotonic())

    async def _reconcile_uncertain(self) -> None:
        """Put into the rankings the uncertain completions that turned out committed; forget
        those still absent after ``UNCERTAIN_TTL_S`` (rolled back, or lost with a primary)."""
        pending = list(self._uncertain)
        try:
            found = await committed(self.db, pending)
            standing = await scores.standings(self.db, users=sorted({u for u, _ in found}))
        except DatabaseUnavailable:
            return  # still down: next round
        for key in found:
            del self._uncertain[key]
            metrics.UNCERTAIN.labels("committed").inc()
        for user, updates in standing.items():
            # If a later completion was recorded already (a newer standing), a no-op.
            await self.record(user, updates)
        expired = time.monotonic() - UNCERTAIN_TTL_S
        for key in [k for k, at in self._uncertain.items() if at < expired]:
            del self._uncertain[key]
            metrics.UNCERTAIN.labels("absent").inc()

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await supervise.sleep(interval_s)
            await self.tick()

    async def tick(self) -> None:
        """One round: read back uncertain completions; once Redis answers again after
        completions it missed, invalidate the rankings (a new generation) and rebuild them;
        rebuild any ranking left incomplete."""
        if self._uncertain:
            await self._reconcile_uncertain()
        try:
            if self.stale:
                await self.ranking.client.ping()
                # Cleared first: a record missed while invalidating sets it again.
                self.stale = False
                try:
                    for board in self.boards:  # reads use PostgreSQL until the rebuild ends
                        await self.ranking.invalidate(board)
                except REDIS_ERRORS:
                    self.stale = True
                    raise
            await self._sweep()
        except REDIS_ERRORS:
            pass  # still away: next round


def _behind(composite: float | None, update: Standing) -> bool:
    """Whether a ranking entry (None: absent) is older than PostgreSQL's standing (a lower
    ``reached_seq``: the score may be higher, after an adjustment took points back)."""
    try:
        wanted = encode(update.score, update.reached_seq)
    except RankingRangeError:
        return False  # never recorded either: the write path logs it
    if composite is None:
        return True
    held = reached_seq(composite)
    if held != update.reached_seq:
        return held < update.reached_seq
    return int(composite) < wanted
