"""``leaderboard rollout``: every member restarted, the replicas first, the primary last
through a planned switchover, as CloudNativePG and PGO roll their instances.

The operator does the restarts (it owns the members: a replica it sees down it would rejoin
itself), asked through its control file; this module holds both halves: :func:`roll`, which
the local operator runs between two rounds, and :func:`run_rollout`, the command, which asks
for it under the failover drill's writers and reports what the writers saw.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from leaderboard.config import Settings
from leaderboard.operator.probe import probe
from leaderboard_tools.devstack.process import StackError
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.drill import Load, LocalTarget, wait_until_true

if TYPE_CHECKING:
    from leaderboard_tools.operator.local import LocalOperator

STREAMING_TIMEOUT_S = 60.0


async def requested(operator: LocalOperator, rollout: str) -> None:
    """The rollout ``leaderboard rollout`` asked for, its end recorded with its id."""
    from leaderboard_tools.operator.control import write_control

    operator.record("rollout", None, "rollout: replicas first, the primary last", rollout=rollout)
    try:
        restarted = await roll(operator)
    except (StackError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
        operator.record("rollout-failed", None, f"rollout stopped: {exc}", rollout=rollout)
    else:
        operator.record(
            "rollout-done", None, f"restarted {', '.join(restarted)}",
            rollout=rollout, restarted=restarted,
        )  # fmt: skip
    write_control(operator.stack.run_dir, rollout=None)


async def roll(operator: LocalOperator) -> list[str]:
    """Restart each replica (the next only once this one streams synchronously again), then
    switch over to the replica furthest ahead, which restarts the old primary as a replica.
    The members restarted, in order."""
    restarted = []
    old = operator.primary
    replicas = [m for m in operator.stack.members if m.name != old]
    for member in replicas:
        await asyncio.to_thread(member.stop)
        member.start()
        await _synchronous_again(operator, member.name)
        operator.observed.rejoined(member.name)
        restarted.append(member.name)
        operator.record("restarted", member.name, "rollout: restarted, streaming again")
    target = await _furthest_ahead(operator, [m.name for m in replicas])
    operator.record("switchover", target, f"rollout: {old} last, through a switchover")
    await operator.switchover(target, old)
    await _synchronous_again(operator, old)
    restarted.append(old)
    return restarted


async def _synchronous_again(operator: LocalOperator, name: str) -> None:
    """Until ``name`` streams (its own WAL receiver says so: the primary may still list the
    connection of the process just stopped) and the primary counts it as a synchronous
    candidate."""
    members = {m.name: m for m in operator.stack.members}
    password = operator.stack.superuser_password
    deadline = time.monotonic() + STREAMING_TIMEOUT_S
    while time.monotonic() < deadline:
        primary, member = members[operator.primary], members[name]
        try:
            own = await probe(
                member.host, member.port, password, operator.timeout_s, tls=member.client_ssl()
            )
            if own.in_recovery and own.upstream_port is not None:
                seen = await probe(
                    primary.host, primary.port, password, operator.timeout_s,
                    tls=primary.client_ssl(),
                )  # fmt: skip
                if name in seen.sync_standbys:
                    return
        except Exception:  # noqa: S110 - refused, starting up, timed out: not yet
            pass
        await asyncio.sleep(0.05)
    raise StackError(f"rollout paused: {name} is not streaming again after {STREAMING_TIMEOUT_S} s")


async def _furthest_ahead(operator: LocalOperator, names: list[str]) -> str:
    password = operator.stack.superuser_password
    best, best_lsn = names[0], -1
    for member in operator.stack.members:
        if member.name in names:
            seen = await probe(
                member.host, member.port, password, operator.timeout_s, tls=member.client_ssl()
            )
            if seen.lsn > best_lsn:
                best, best_lsn = member.name, seen.lsn
    return best


# -- the command


@dataclass
class RolloutResult:
    restarted: list[str]
    primary_before: str
    primary_after: str | None
    acknowledged: int
    failed_requests: int
    longest_pause_s: float
    lost: int | None
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.failed_requests == 0 and self.lost == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


async def run_rollout(stack: Stack, settings: Settings, writers: int = 8) -> RolloutResult:
    from leaderboard_tools.operator.control import write_control

    target = LocalTarget(stack)
    before, _ = await target.members()
    if before is None:
        raise StackError("no member accepts writes: start the stack with `leaderboard up`")
    rollout = uuid.uuid4().hex[:8]
    events = stack.run_dir / "operator.jsonl"
    async with Load(await target.api_url(), settings, writers) as load:
        if not await wait_until_true(lambda: len(load.acks) >= 20, 15):
            raise StackError("the API acknowledges no writes before the rollout")
        started = time.time()
        write_control(stack.run_dir, rollout=rollout)
        done = await wait_until_true(lambda: _ended(events, rollout) is not None, 300, interval=0.1)
        ended = time.time()
        await wait_until_true(lambda: any(sent > ended for _, sent, _ in load.acks), 30)
        await asyncio.sleep(0.5)  # a little steady state after it
    outcome = _ended(events, rollout) if done else {"error": "no answer from the operator"}
    assert outcome is not None
    after, _ = await target.members()
    lost = None
    if after is not None:
        found = await target.stored(after, [u for u, _, _ in load.acks])
        lost = sum(1 for u, _, _ in load.acks if u not in found)
    return RolloutResult(
        restarted=list(outcome.get("restarted", [])),
        primary_before=before,
        primary_after=after,
        acknowledged=len(load.acks),
        failed_requests=len(load.failures),
        longest_pause_s=_longest_pause(load, started, ended),
        lost=lost,
        seconds=round(ended - started, 3),
        error=outcome.get("error"),
    )


def _ended(events: Any, rollout: str) -> dict[str, Any] | None:
    """The operator's last word on this rollout: {"restarted": [...]} or {"error": ...}."""
    try:
        lines = events.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        event = json.loads(line)
        if event.get("rollout") != rollout:
            continue
        if event["action"] == "rollout-done":
            return {"restarted": event.get("restarted", [])}
        if event["action"] == "rollout-failed":
            return {"error": event["reason"]}
    return None


def _longest_pause(load: Load, start: float, end: float) -> float:
    """The longest time between two acknowledgements while the rollout ran (or between its
    start or end and the nearest acknowledgement)."""
    times = sorted(ack for _, _, ack in load.acks if start <= ack <= end)
    marks = [start, *times, end]
    return round(max(b - a for a, b in itertools.pairwise(marks)), 3)


def report(result: RolloutResult, as_json: bool) -> str:
    if as_json:
        return json.dumps(result.to_json())
    verdict = "passed" if result.passed else "FAILED"
    lines = [
        f"rollout {verdict}: restarted {', '.join(result.restarted) or 'nothing'} in "
        f"{result.seconds:.1f} s; primary {result.primary_before} -> {result.primary_after}",
        f"  {result.acknowledged} writes acknowledged, {result.failed_requests} failed, "
        f"longest pause {result.longest_pause_s:.2f} s, lost {result.lost}",
    ]
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)
