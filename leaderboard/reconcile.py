"""The reconciliation: every completion, admin adjustment, ban and unban is checked against the
Redis rankings once, a few seconds after it was written, by one API process at a time.

The other repairs each follow a failure that some process saw: a missed record (rebuild), an
award with an unknown outcome, a predecessor killed mid-request (catch-up at start). This one
needs no witness, so it also covers what nobody saw: a process killed with no successor, a
Redis that failed over to a replica short of the last writes, a bug. It is what makes the
rankings converge whatever the fault sequence: once PostgreSQL and Redis both answer, a
committed completion is in the rankings within ``lag_s + interval_s`` (plus one round's work)
of its commit, if its transaction lasted less than ``lag_s`` (longer ones are the uncertain
completions, which the process that saw them follows).

How, cheaply: completions have an increasing id. Each round notes the largest id visible
(``max(id)``, one index probe); ``lag_s`` later every id up to that note was assigned at least
``lag_s`` ago, so its transaction has ended unless it lasted longer than that. The round
checks the completions between the shared watermark (``Keys.reconciled``) and that note: their
users' standings in PostgreSQL against the rankings, recording what the rankings lack or hold
an older standing of. Each completion is read once (ids are in the primary key's order),
whichever process checks it. Adjustments the same way, with a watermark of their own: an
adjustment that Redis missed, or whose process died before its Redis step, has a newer standing
than the ranking's (a lower score, if it took points back), which the record then sets. Bans
and unbans (``admin_audit``) too: their Redis step is carried out again from PostgreSQL's state
(:meth:`Repair.moderate_lacking`), so one whose process died after its commit converges.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from leaderboard import metrics, supervise
from leaderboard.cache.lock import Lease
from leaderboard.db import scores
from leaderboard.repair import ERRORS, Repair

log = logging.getLogger("leaderboard.reconcile")

# KEYS: watermark.  ARGV: id.  The watermark only moves forward.
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass
class _Stream:
    """Rows with increasing ids whose users' standings are checked: completions, adjustments,
    bans and unbans."""

    table: str
    watermark: str  # Redis key: the last id checked
    users: str = "user_id"  # the column naming the user
    where: str = "true"  # which rows count
    # (monotonic time, largest id visible then), oldest first.
    notes: deque[tuple[float, int]] = field(default_factory=deque)


class Reconciler:
    def __init__(
        self, repair: Repair, *, interval_s: float, lag_s: float, batch: int = 20_000
    ) -> None:
        self.repair = repair
        self.interval_s = interval_s
        self.lag_s = lag_s
        self.batch = batch  # rows checked per round and stream at most (the rest: next round)
        client = repair.ranking.client
        self.keys = repair.ranking.keys
        self._advance = client.register_script(_ADVANCE)
        self._lease = Lease(client, self.keys.reconcile_lock, ttl_s=max(30.0, 3 * interval_s))
        self._streams = (
            _Stream("completions", self.keys.reconciled),
            _Stream("adjustments", self.keys.reconciled_adjustments),
            _Stream(
                "admin_audit",
                self.keys.reconciled_moderation,
                users="subject",  # NULL once the user is erased
                where="action IN ('ban', 'unban') AND subject IS NOT NULL",
            ),
        )

    async def run(self) -> None:
        while True:
            await supervise.sleep(self.interval_s)
            try:
                await self.round()
            except ERRORS as exc:  # the next round takes the same range again
                log.debug("reconciliation round failed: %s", exc)

    async def round(self, now: float | None = None) -> int:
        """One round (``now``: the monotonic clock, for tests); how many users were recorded."""
        now = time.monotonic() if now is None else now
        bounds = []
        for stream in self._streams:
            row = await self.repair.db.fetchrow(
                f"SELECT coalesce(max(id), 0) AS id FROM {stream.table}"  # noqa: S608 - constant
            )
            assert row is not None
            newest = int(row["id"])
            stream.notes.append((now, newest))
            # The newest note at least lag_s old is the bound; older ones are of no more use.
            while len(stream.notes) > 1 and stream.notes[1][0] <= now - self.lag_s:
                stream.notes.popleft()
            noted_at, upto = stream.notes[0]
            if noted_at <= now - self.lag_s:  # else this process has not been up for lag_s
                bounds.append((stream, upto, newest))
        if not bounds or not await self._lease.acquire():
            return 0  # nothing old enough yet, or another process is at it
        try:
            recorded = 0
            for stream, upto, newest in bounds:
                recorded += await self._check_until(stream, upto, newest)
            return recorded
        finally:
            await self._lease.release()

    async def _check_until(self, stream: _Stream, upto: int, newest: int) -> int:
        client = self.repair.ranking.client
        raw = await client.get(stream.watermark)
        checked = None if raw is None else int(raw)
        if checked is None or checked > newest:
            # First round ever, Redis lost the watermark (and with it the rankings, which are
            # rebuilt whole), or PostgreSQL was replaced by an older copy: start here.
            await client.set(stream.watermark, upto)
            return 0
        if checked >= upto:
            return 0
        rows = await self.repair.db.fetch(
            f"SELECT id, {stream.users} AS user_id FROM {stream.table}"  # noqa: S608 - constant
            f" WHERE {stream.where} AND id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            checked,
            upto,
            self.batch,
        )
        reached = int(rows[-1]["id"]) if len(rows) == self.batch else upto
        users = sorted({r["user_id"] for r in rows})
        recorded = 0
        if users and stream.table == "admin_audit":
            await self.repair.moderate_lacking(users)
        elif users:
            found = await scores.standings(self.repair.db, users=users)
            recorded = await self.repair.record_lacking(found, "reconcile")
        await self._advance(keys=[stream.watermark], args=[reached])
        if stream.table == "completions":
            metrics.RECONCILED.inc(len(rows))
            metrics.RECONCILE_BEHIND.set(upto - reached)
        if recorded:
            log.warning(
                "reconciliation: recorded %d users the rankings lacked (%s %d-%d)",
                recorded,
                stream.table,
                checked + 1,
                reached,
            )
        return recorded
