"""``leaderboard drill restore``: backups proven on the running local stack.

A base backup; writers through the API; a recorded target time while they write; a planned
switchover; more writes. Then ``restore --latest`` (every acknowledged write present) and
``restore --target-time`` (every write acknowledged before the target present, none sent
after it; one in flight across the target may go either way), each followed by the Redis
ranking converging to PostgreSQL's. Exit 1 on any violation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from leaderboard.config import Settings
from leaderboard.operator.pgbackrest import iso
from leaderboard_tools.devstack.consistency import ranking_converges
from leaderboard_tools.devstack.process import StackError, wait_for
from leaderboard_tools.devstack.restore import restore
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.control import write_control
from leaderboard_tools.operator.drill import Load, LocalTarget

PHASE_S = 3.0  # writing before the target, after it, and after the switchover


@dataclass
class Step:
    restore: str  # "latest" or the target time
    seconds: float  # until the stack was writable again
    recovered_to: str | None
    wal_bytes: int  # WAL replayed: from the backup's end to where recovery stopped
    expected: int  # acknowledged writes that must be present
    missing: int
    unexpected: int  # writes sent after the target that are present
    ranking_equal: bool


@dataclass
class RestoreDrill:
    acknowledged: int
    target: str
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(
            s.missing == 0 and s.unexpected == 0 and s.ranking_equal for s in self.steps
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


async def run_drill(stack: Stack, settings: Settings) -> RestoreDrill:
    target_stack = LocalTarget(stack)
    primary, _ = await target_stack.members()
    if primary is None:
        raise StackError("no member accepts writes: start the stack with `leaderboard up`")
    stack.prepare_run_dir()
    first = next(m for m in stack.members if m.name == primary)
    backup_id = await asyncio.to_thread(stack.backups.backup, first)
    stop_lsn = next(b.stop_lsn for b in stack.backups.info().backups if b.id == backup_id)
    async with Load(stack.api_url, settings) as load:
        await asyncio.sleep(PHASE_S)
        target = time.time()
        await asyncio.sleep(PHASE_S)
        other = next(m.name for m in stack.members if m.name != primary)
        write_control(stack.run_dir, switchover_to=other)
        await wait_for(
            lambda: _primary_is(target_stack, other), timeout=60, what=f"switchover to {other}"
        )
        await asyncio.sleep(PHASE_S)
    acks = list(load.acks)
    drill = RestoreDrill(acknowledged=len(acks), target=iso(_utc(target)))
    everyone = [user for user, _, _ in acks]
    before = {user for user, _, acked in acks if acked < target}
    after = {user for user, sent, _ in acks if sent > target}
    for when in (None, target):
        done = await restore(stack, _utc(when) if when is not None else None)
        present = await target_stack.stored(stack.members[0].name, everyone)
        must = set(everyone) if when is None else before
        diff, _ = await ranking_converges(
            stack, stack.members[0], settings.reconcile_lag_s + settings.reconcile_interval_s + 15
        )
        drill.steps.append(
            Step(
                restore=done.target,
                seconds=done.seconds,
                recovered_to=done.recovered_to,
                wal_bytes=await _replayed(stack, stop_lsn),
                expected=len(must),
                missing=len(must - present),
                unexpected=len(after & present) if when is not None else 0,
                ranking_equal=not diff,
            )
        )
    return drill


async def _primary_is(target: LocalTarget, name: str) -> bool:
    primary, _ = await target.members()
    return primary == name


async def _replayed(stack: Stack, stop_lsn: str) -> int:
    conn = await stack.members[0].connect(stack.superuser_password)
    try:
        value = await conn.fetchval("SELECT pg_current_wal_lsn() - $1::text::pg_lsn", stop_lsn)
    finally:
        await conn.close()
    return max(0, int(value))


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def report(drill: RestoreDrill, as_json: bool) -> str:
    if as_json:
        return json.dumps(drill.to_json())
    lines = [f"{drill.acknowledged} acknowledged writes; target {drill.target}"]
    for s in drill.steps:
        lines.append(
            f"restore {s.restore}: writable after {s.seconds:.1f} s, {s.wal_bytes:,} WAL bytes "
            f"replayed, {s.missing} of {s.expected} missing, {s.unexpected} after the target, "
            f"ranking {'equal' if s.ranking_equal else 'DIFFERENT'}"
        )
    lines.append("passed" if drill.passed else "FAILED")
    return "\n".join(lines)
