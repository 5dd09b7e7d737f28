"""``leaderboard chaos`` and ``leaderboard drill partition``: faults under write and viewer
load, then the history check (:mod:`leaderboard_tools.chaos.history`).

A campaign draws its schedule from ``--seed``: the chosen faults in a shuffled order, again
and again until ``--duration`` is used up, each held for a random few seconds, healed, and
followed by a wait until the world is healthy again (every member streaming, services
ready) and a short steady state. The partition drill is the same run with one fault.
Throughout, writers complete actions through the API (each a fresh user, so each
acknowledgement is one row to look for), viewers watch the top 10 over WebSockets, and a
direct client writes to the primary it is connected to; a moderator (``Plan.moderate``) bans,
unbans, adjusts and erases users who are completing actions at the same time
(:mod:`leaderboard_tools.chaos.moderator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from leaderboard.cache.keys import Keys
from leaderboard_tools.chaos import history, moderator
from leaderboard_tools.chaos.faults import FAULTS, Fault
from leaderboard_tools.chaos.viewers import DIRECT_IDS, DirectWriter, Viewers, snapshot
from leaderboard_tools.chaos.world import World
from leaderboard_tools.devstack.consistency import ranking_converges
from leaderboard_tools.operator.drill import Load, timeline

# Every action of the catalog, with valid data: fresh users land all over the ranking, so
# the top 10 keeps changing for a while and the viewers have something to follow.
ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("verify-email", {}),
    ("complete-profile", {}),
    ("first-lesson", {}),
    ("quiz-basics", {"correct": 8}),
    ("invite-friend", {"channel": "link"}),
    ("seven-day-streak", {"days": 9}),
    ("final-exam", {"examId": "chaos", "score": 61}),
]


@dataclass
class Plan:
    duration_s: float
    seed: int = 1
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    hold_s: tuple[float, float] = (5.0, 12.0)
    settle_s: tuple[float, float] = (1.0, 3.0)
    writers: int = 8
    viewers: int = 20
    recovery_timeout_s: float = 90.0
    max_faults: int | None = None  # stop after this many, whatever the duration left
    moderate: bool = True  # a moderator beside the writers (bans, unbans, adjustments, erasures)

    def schedule(self, rng: random.Random) -> Any:
        while True:
            round_ = list(self.faults)
            rng.shuffle(round_)
            yield from round_


@dataclass
class Run:
    plan: Plan
    started: float = 0.0
    ended: float = 0.0
    records: list[history.FaultRecord] = field(default_factory=list)
    check: history.Check | None = None
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    episodes: list[moderator.Episode] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        assert self.check is not None
        return {
            "seed": self.plan.seed,
            "duration_s": round(self.ended - self.started, 1),
            "faults_planned": self.plan.faults,
            "passed": self.check.passed,
            "violations": self.check.violations,
            "check": asdict(self.check),
            "by_fault": history.summary_by_kind(self.records),
            "moderation": moderator.summary(self.episodes),
            "faults": [asdict(r) for r in self.records],
            "timeline": self.timeline,
        }


async def run(world: World, plan: Plan) -> Run:
    rng = random.Random(plan.seed)  # noqa: S311 - a schedule, not a secret
    result = Run(plan)
    stack = world.cluster
    first_primary = world.recorded_primary()
    load = Load(stack.api_url, world.settings, plan.writers, ACTIONS, seed=plan.seed)
    moderation = (
        moderator.Moderator(stack.api_url, world.settings, ACTIONS, seed=plan.seed)
        if plan.moderate
        else contextlib.nullcontext(None)
    )
    async with (
        load,
        Viewers(stack.ws_url, plan.viewers) as viewers,
        DirectWriter(world) as direct,
        moderation as mod,
    ):
        deadline = time.monotonic() + 30
        while len(load.acks) < 20:
            if time.monotonic() > deadline:
                raise RuntimeError("the API acknowledges no writes before the first fault")
            await asyncio.sleep(0.1)
        result.started = time.time()
        for name in plan.schedule(rng):
            if result.records and time.time() - result.started >= plan.duration_s:
                break
            if plan.max_faults is not None and len(result.records) >= plan.max_faults:
                break
            try:
                record = await _one_fault(world, FAULTS[name], plan, rng)
            except Exception as exc:  # the drill's own failure: reported, then the check
                result.errors.append(f"VIOLATION: the drill failed during {name}: {exc!r}")
                break
            result.records.append(record)
            if record.recovered_s is None:
                break  # the world is broken: check what it holds now
            await asyncio.sleep(rng.uniform(*plan.settle_s))
        await asyncio.sleep(1.0)  # a last steady state
        result.ended = time.time()
    if mod is not None:
        result.episodes = mod.episodes
    _fill_in(result, world, load)
    result.check = await _check(world, load, direct, viewers, result, first_primary)
    result.check.details += result.errors
    result.timeline = timeline(load, result.started, bucket_s=1.0)
    return result


async def _one_fault(
    world: World, fault: Fault, plan: Plan, rng: random.Random
) -> history.FaultRecord:
    victim = fault.victim(world, await world.roles())
    record = history.FaultRecord(fault.name, fault.kind, victim, injected=time.time())
    await fault.inject(world, victim)
    await asyncio.sleep(rng.uniform(*plan.hold_s))  # the fault holds: this is the schedule
    record.healed = time.time()
    await fault.heal(world, victim)
    recovered = await world.wait_healthy(plan.recovery_timeout_s)
    record.recovered_s = None if recovered is None else round(recovered, 3)
    return record


def _promotions(world: World, since: float) -> list[tuple[float, str]]:
    return [(e["ts"], e["target"]) for e in world.events(since) if e["action"] == "promoted"]


def _fill_in(result: Run, world: World, load: Load) -> None:
    """Per fault: promotion, write downtime, requests in its window (up to the next one)."""
    acks = [(sent, acked) for _, sent, acked in load.acks]
    promotions = _promotions(world, result.started)
    for i, r in enumerate(result.records):
        end = result.records[i + 1].injected if i + 1 < len(result.records) else result.ended
        r.downtime_s, r.writes_resumed = history.downtime(acks, r.injected, end)
        inside = [(t, m) for t, m in promotions if r.injected <= t < end]
        if inside:
            r.promoted, r.promoted_s = inside[0][1], round(inside[0][0] - r.injected, 3)
        r.acknowledged = sum(1 for _, a in acks if r.injected <= a < end)
        r.failed = sum(1 for t in load.failures if r.injected <= t < end)


def _demotions(world: World, since: float, first_primary: str) -> dict[str, list[float]]:
    demoted: dict[str, list[float]] = {}
    primary = first_primary
    for at, new in _promotions(world, since):
        if new != primary:
            demoted.setdefault(primary, []).append(at)
        primary = new
    return demoted


def _isolations(records: list[history.FaultRecord]) -> dict[str, list[tuple[float, float]]]:
    isolated: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if FAULTS[r.fault].isolates_primary:
            isolated.setdefault(r.victim, []).append((r.injected, r.healed or r.injected))
    return isolated


async def _check(
    world: World,
    load: Load,
    direct: DirectWriter,
    viewers: Viewers,
    result: Run,
    first_primary: str,
) -> history.Check:
    details: list[str] = []
    timeout = result.plan.recovery_timeout_s
    recovered = await world.wait_healthy(timeout)
    if recovered is None:
        details.append(f"VIOLATION: the world was not healthy {timeout:.0f} s after the end")
    roles = await world.roles()
    primary = next((n for n, r in roles.items() if r == "primary"), None)
    demoted = _demotions(world, 0.0, first_primary)
    isolated = _isolations(result.records)
    check = history.Check(
        acknowledged=len(load.acks),
        lost=0,
        split_brain=0,
        direct_acknowledged=len(direct.acks),
        direct_lost=0,
        direct_split_brain=0,
        ranking_equal=False,
        viewers_at_last_seq=False,
        all_recovered=recovered is not None
        and all(r.recovered_s is not None for r in result.records),
        details=details,
    )
    if primary is None:
        details.append("VIOLATION: no member answers as primary: nothing could be checked")
        check.lost = len(load.acks)
        return check
    member = world.member(primary)
    conn = await asyncpg.connect(world.cluster.database_url(member), timeout=10)
    try:
        users = [u for u, _, _ in load.acks]
        rows = await conn.fetch(
            "SELECT user_id FROM completions WHERE user_id = ANY($1::text[])", users
        )
        found = {r["user_id"] for r in rows}
        missing = [("", acked) for u, _, acked in load.acks if u not in found]
        check.lost = len(missing)
        check.split_brain = history.unsafe_acks(missing, demoted, isolated)
    finally:
        await conn.close()
    admin = await member.connect(world.cluster.superuser_password, timeout=10)
    try:
        ids = {r["id"] for r in await admin.fetch(DIRECT_IDS)}
    finally:
        await admin.close()
    direct_missing = [(m, at) for n, m, at in direct.acks if n not in ids]
    check.direct_lost = len(direct_missing)
    check.direct_split_brain = history.unsafe_acks(direct_missing, demoted, isolated)
    check.ranking_equal = await _ranking_equal(world, member, details)
    check.viewers_at_last_seq = await _viewers_caught_up(world, viewers, details)
    if result.episodes:
        details += await _moderation(world, member, result.episodes)
    return check


async def _moderation(world: World, member: Any, episodes: list[moderator.Episode]) -> list[str]:
    """The moderator's rules, on what the final primary and every Redis ranking hold."""
    users = [ep.user for ep in episodes]
    client = aioredis.from_url(world.cluster.redis.url)
    keys = Keys(world.cluster.layout.redis_prefix)
    ranked: set[str] = set()
    try:
        boards = [keys.scores] + [
            k.decode() async for k in client.scan_iter(match=keys.board("*").scores)
        ]
        for key in boards:
            held = await client.zmscore(key, users)
            ranked |= {u for u, score in zip(users, held, strict=True) if score is not None}
    finally:
        await client.aclose()
    conn = await asyncpg.connect(world.cluster.database_url(member), timeout=10)
    try:
        state = await moderator.held(conn, ranked, users)
    finally:
        await conn.close()
    return moderator.violations(episodes, state)


async def _ranking_equal(world: World, member: Any, details: list[str]) -> bool:
    """Redis holds exactly PostgreSQL's ranking within the documented bound (docs/api.md,
    ranking consistency: the reconciliation's lag and interval) plus a rebuild's time."""
    bound = world.settings.reconcile_lag_s + world.settings.reconcile_interval_s + 15
    diff, took = await ranking_converges(world.cluster, member, bound)
    details += [f"ranking: {d}" for d in diff]
    if not diff:
        details.append(f"ranking: equal to PostgreSQL's {took:.1f} s after the end")
    return not diff


async def _viewers_caught_up(world: World, viewers: Viewers, details: list[str]) -> bool:
    stack = world.cluster
    deadline = time.monotonic() + 20
    last: dict[str, Any] = {}
    behind: list[int] = []
    while time.monotonic() < deadline:
        try:
            last = await snapshot(stack.ws_url)
        except Exception:  # the broadcaster restarting: try again
            await asyncio.sleep(0.5)
            continue
        behind = [
            i for i, v in enumerate(viewers.viewers) if v.seq != last["seq"] or v.top != last["top"]
        ]
        if not behind:
            break
        await asyncio.sleep(0.25)
    async with httpx.AsyncClient(timeout=5) as client:
        top = (await client.get(f"{stack.api_url}/api/leaderboard")).json()["top"]
    # Broadcasts follow the membership (DESIGN.md): a top-10 user's later completion or an
    # adjustment moves their score without one, so the members are compared, not the scores.
    if last and {e["userId"] for e in top} != {e["userId"] for e in last["top"]}:
        details.append("VIOLATION: the API's top 10 members differ from the broadcaster's")
    if behind or not last:
        details.append(f"viewers behind the last seq {last.get('seq')}: {len(behind)}")
        return False
    return True
