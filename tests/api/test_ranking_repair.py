"""The Redis rankings converge on PostgreSQL whatever the fault sequence: the window the chaos
campaign found (a rebuild begun before a missed record marked the ranking complete), the same
at a season's reset, and the reconciliation that repairs what no process saw.

Each test drives the repair machinery step by step (no background tasks), against the shared
cluster's real PostgreSQL and Redis, with its own Redis key prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboard.boards import ALL_TIME
from leaderboard.cache.keys import Keys
from leaderboard.cache.ranking import Ranking, encode
from leaderboard.db import moderation as db_moderation
from leaderboard.db import scores
from leaderboard.moderation import Moderation
from leaderboard.service import Leaderboard
from leaderboard.standings import Standing
from tests.apiclient import Api
from tests.support import eventually


@pytest_asyncio.fixture
async def board(api: Api) -> AsyncIterator[Leaderboard]:
    """A Leaderboard on the shared database and Redis, under a key prefix of its own, with
    a complete all-time ranking; its background tasks are not started."""
    svc = api.services
    keys = Keys(f"repair-{uuid.uuid4().hex[:8]}:")
    lb = Leaderboard(
        svc.db, svc.redis, svc.pipe, keys, svc.catalog,
        rate_limit=1000, rate_window_s=60, top_cache_s=0, around=2,
    )  # fmt: skip
    assert await _rebuild(lb) == "done"
    try:
        yield lb
    finally:
        await lb.repair.stop()
        found = [k async for k in svc.redis.scan_iter(match=f"{keys.prefix}*")]
        if found:
            await svc.redis.delete(*found)


async def _rebuild(
    lb: Leaderboard, read: asyncio.Event | None = None, hold: asyncio.Event | None = None
) -> str:
    """The all-time board's rebuild, as a process runs it; it sets ``read`` once it has read
    every row from PostgreSQL, then waits for ``hold`` (the fault point)."""

    async def batches() -> AsyncIterator[list[tuple[str, int, int]]]:
        async for batch in scores.all_scores(lb.db):
            yield batch
        if read is not None and hold is not None:
            read.set()
            await hold.wait()

    return await lb.ranking.rebuild(ALL_TIME, 1, batches)


async def _differences(lb: Leaderboard) -> dict[str, tuple[int | None, int | None]]:
    """Users whose all-time entry differs: user -> (PostgreSQL's, Redis's) composite."""
    rows = await lb.db.fetch("SELECT user_id, score, reached_seq FROM scores WHERE NOT banned")
    postgres = {r["user_id"]: encode(r["score"], r["reached_seq"]) for r in rows}
    flat: list[Any] = await lb.client.zrange(lb.ranking.keys.scores, 0, -1, withscores=True)
    redis = {m.decode(): int(s) for m, s in flat}
    return {
        u: (postgres.get(u), redis.get(u))
        for u in postgres.keys() | redis.keys()
        if postgres.get(u) != redis.get(u)
    }


async def _complete_unrecorded(lb: Leaderboard, user: str) -> None:
    """A completion that commits while its Redis update fails (Redis cut mid-request)."""
    real = lb.ranking.record

    async def refused(*_: object) -> Any:
        raise RedisConnectionError("Connection closed by server.")

    lb.ranking.record = refused  # type: ignore[method-assign]
    try:
        done = await lb.complete(user, "verify-email", {}, f"req-{user}")
    finally:
        lb.ranking.record = real  # type: ignore[method-assign]
    assert done.rank is None  # acknowledged, not ranked
    assert lb.repair.stale
    lb.breaker.reset()  # Redis answers again: the breaker's cool-down is over


@pytest.mark.parametrize("rebuilder", ["this process", "another process"])
async def test_a_rebuild_begun_before_a_missed_record_never_marks_the_ranking_complete(
    board: Leaderboard, new_user: Callable[[], str], rebuilder: str
) -> None:
    """The chaos campaign's window (seed 11: a kill-api, then a kill-redis): a rebuild read
    PostgreSQL; then a completion committed and its record failed; the repair invalidated the
    ranking, but the rebuild under way (here, or another process's, holding the lease) then
    marked it complete, and the completion was missing for good."""
    lb = board
    before = new_user()
    await lb.complete(before, "verify-email", {}, "req-before")
    await lb.ranking.invalidate()  # the ranking must be rebuilt: a rebuild starts and reads
    read, hold = asyncio.Event(), asyncio.Event()
    rebuild = asyncio.create_task(_rebuild(lb, read, hold))
    if rebuilder == "this process":
        lb.repair._rebuilds[ALL_TIME] = rebuild  # type: ignore[assignment]
    # else the lease is another process's: this process's own rebuild finds it taken.
    await asyncio.wait_for(read.wait(), 10)

    missed = new_user()
    await _complete_unrecorded(lb, missed)
    await lb.repair.tick()  # Redis answers: invalidate, rebuild (none starts: one is under way)
    for task in list(lb.repair._rebuilds.values()):
        if task is not rebuild:
            await asyncio.wait_for(task, 10)
    assert not await lb.ranking.is_ready(ALL_TIME)
    hold.set()
    result = await asyncio.wait_for(rebuild, 30)

    assert result == "done"  # it started again in the new generation, and read `missed`
    assert await lb.ranking.is_ready(ALL_TIME)
    assert await _differences(lb) == {}
    view = await lb.reads.user(missed)
    assert (view.score, view.user_id) == (10, missed)


async def test_a_ranking_invalidated_before_a_reset_stays_incomplete_after_it(
    api: Api,
) -> None:
    """A new season used to start complete. A record of the new season missed, the ranking
    invalidated, then another completion's record made the reset: the ranking was marked
    complete without the missed entry. It now starts as complete as the old season was."""
    keys = Keys(f"reset-{uuid.uuid4().hex[:8]}:")
    ranking = Ranking(api.services.redis, keys)
    try:
        await ranking.record("a", [Standing("weekly", 1, 10, 1)])
        assert await ranking.rebuild("weekly", 1, _empty) == "done"
        await ranking.record("b", [Standing("weekly", 2, 10, 3)])  # a reset: complete as before
        assert await ranking.is_ready("weekly")
        # "c" completed in season 3 and its record was missed: the ranking is invalidated.
        await ranking.invalidate("weekly")
        await ranking.record("d", [Standing("weekly", 3, 10, 5)])  # the reset to season 3
        assert not await ranking.is_ready("weekly")
        assert await ranking.page("weekly", 0, 10) is None  # reads go to PostgreSQL
        assert await ranking.rebuild("weekly", 3, _season_three) == "done"
        page = await ranking.page("weekly", 0, 10)
        assert page is not None and {e["userId"] for e in page.entries} == {"c", "d"}
    finally:
        await api.services.redis.delete(keys.board("weekly").scores, keys.board("weekly").top10)


async def _empty() -> AsyncIterator[list[tuple[str, int, int]]]:
    for batch in ():
        yield batch


async def _season_three() -> AsyncIterator[list[tuple[str, int, int]]]:
    yield [("c", 10, 4), ("d", 10, 5)]


def _repaired(via: str) -> float:
    labels = {"board": ALL_TIME, "via": via}
    return REGISTRY.get_sample_value("leaderboard_ranking_repaired_total", labels) or 0.0


async def test_the_reconciliation_repairs_what_no_process_saw(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    """A ranking marked complete that lacks committed entries (a Redis failover that lost
    the last writes, a process killed with no successor): nobody invalidates it, and each
    completion is checked once, ``lag_s`` after it was written, by one process at a time."""
    lb = board
    reconciler = lb.reconciler
    assert await reconciler.round(now=0.0) == 0  # the first note; nothing old enough yet
    assert await reconciler.round(now=reconciler.lag_s) == 0  # the watermark starts here
    lost, kept = new_user(), new_user()
    for user in (lost, kept):
        await lb.complete(user, "verify-email", {}, f"req-{user}")
    await lb.client.zrem(lb.ranking.keys.scores, lost)  # as a failed-over Redis would
    assert await lb.ranking.is_ready(ALL_TIME)
    assert set(await _differences(lb)) == {lost}

    # Completions younger than lag_s are not checked yet: their transactions may be open.
    t = reconciler.lag_s + 1
    assert await reconciler.round(now=t) == 0
    assert set(await _differences(lb)) == {lost}
    before = _repaired("reconcile")
    assert await reconciler.round(now=t + reconciler.lag_s) == 1
    assert await _differences(lb) == {}
    assert _repaired("reconcile") == before + 1
    # Checked once: the next round finds nothing more to do.
    await lb.client.zrem(lb.ranking.keys.scores, kept)
    assert await reconciler.round(now=t + 2 * reconciler.lag_s) == 0


async def test_one_process_at_a_time_reconciles(board: Leaderboard) -> None:
    lb = board
    other = Keys(lb.ranking.keys.prefix)
    await lb.client.set(other.reconcile_lock, "another-process", px=60_000)
    await lb.reconciler.round(now=0.0)
    assert await lb.reconciler.round(now=lb.reconciler.lag_s) == 0
    assert await lb.client.get(other.reconciled) is None  # it did not even start


# -- the newest standing wins: scores may go down, and nothing late or stale undoes that


async def _standing(lb: Leaderboard, user: str) -> Standing:
    row = await lb.db.fetchrow("SELECT score, reached_seq FROM scores WHERE user_id = $1", user)
    assert row is not None
    return Standing(ALL_TIME, 1, row["score"], row["reached_seq"])


def _batch(*standings: tuple[str, Standing]) -> Callable[[], AsyncIterator[Any]]:
    async def batches() -> AsyncIterator[list[tuple[str, int, int]]]:
        yield [(user, s.score, s.reached_seq) for user, s in standings]

    return batches


async def test_an_adjustment_that_took_points_back_survives_late_and_stale_writes(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    """A completion committed before the adjustment and recorded after it (a slow process),
    and a rebuild that read the user before it: both carry the older, higher standing,
    which must not come back."""
    lb = board
    user = new_user()
    await lb.complete(user, "complete-profile", {}, f"req-{user}")
    late = await _standing(lb, user)
    answer = await Moderation(lb, settle_s=1.0).adjust(user, -15, "refund", "ops", None)
    assert answer["score"] == late.score - 15
    assert await _differences(lb) == {}

    await lb.ranking.record(user, [late])
    assert await _differences(lb) == {}
    await lb.ranking.rebuild(ALL_TIME, 1, _batch((user, late)))
    assert await _differences(lb) == {}
    # A newer standing still goes in, whichever way it moves the score.
    await lb.complete(user, "verify-email", {}, f"req-{user}-2")
    assert await _differences(lb) == {}
    assert (await lb.reads.user(user)).score == late.score - 15 + 10


async def test_an_award_waiting_for_the_row_takes_its_seq_after_the_change_it_waited_for(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    """Per user, a later commit has the higher tie-break seq: the award takes it once it holds
    the row, not when it starts (else an award that waited behind an adjustment would commit
    an older seq than the adjustment's, and the rankings could not tell which is newer)."""
    lb = board
    user = new_user()
    await lb.complete(user, "verify-email", {}, f"req-{user}")
    async with lb.db.connection() as holder:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM scores WHERE user_id = $1 FOR UPDATE", user)
            award = asyncio.create_task(lb.complete(user, "complete-profile", {}, f"req-{user}-2"))

            async def waiting() -> bool:
                return bool(
                    await holder.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%INSERT INTO completions%'"
                    )
                )

            await eventually(waiting)
            taken = await holder.fetchval(
                "UPDATE scores SET reached_seq = nextval('score_reached_seq')"
                " WHERE user_id = $1 RETURNING reached_seq",
                user,
            )
        await award
    assert (await _standing(lb, user)).reached_seq > taken


async def test_the_reconciliation_sets_an_adjustment_the_rankings_missed(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    """An adjustment whose Redis step was lost (its process died, Redis failed over): the
    ranking holds the older, higher score, and the reconciliation lowers it."""
    lb = board
    reconciler = lb.reconciler
    await reconciler.round(now=0.0)
    await reconciler.round(now=reconciler.lag_s)  # the watermarks start here
    user = new_user()
    await lb.complete(user, "complete-profile", {}, f"req-{user}")
    before = await _standing(lb, user)
    await Moderation(lb, settle_s=1.0).adjust(user, -15, "refund", "ops", None)
    await lb.client.zadd(lb.ranking.keys.scores, {user: encode(before.score, before.reached_seq)})
    assert set(await _differences(lb)) == {user}

    t = reconciler.lag_s + 1
    await reconciler.round(now=t)
    assert await reconciler.round(now=t + reconciler.lag_s) == 1
    assert await _differences(lb) == {}


async def test_a_rebuild_leaves_out_a_user_banned_after_it_read_them(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    lb = board
    user = new_user()
    await lb.complete(user, "verify-email", {}, f"req-{user}")
    read = await _standing(lb, user)
    await Moderation(lb, settle_s=1.0).ban(user, "cheating", "ops")
    await lb.ranking.rebuild(ALL_TIME, 1, _batch((user, read)))
    assert await lb.client.zscore(lb.ranking.keys.scores, user) is None
    assert await _differences(lb) == {}


async def test_the_reconciliation_carries_out_bans_and_unbans_whose_redis_step_was_lost(
    board: Leaderboard, new_user: Callable[[], str]
) -> None:
    """A ban or unban committed in PostgreSQL whose process died before its Redis step (or
    whose Redis failed): nobody is told to repeat it, and the reconciliation brings the
    rankings in line: the banned user out and kept out, the unbanned one back exactly."""
    lb = board
    reconciler = lb.reconciler
    await reconciler.round(now=0.0)
    await reconciler.round(now=reconciler.lag_s)  # the watermarks start here
    banned, unbanned = new_user(), new_user()
    for user in (banned, unbanned):
        await lb.complete(user, "complete-profile", {}, f"req-{user}")
    await Moderation(lb, settle_s=1.0).ban(unbanned, "cheating", "ops")
    before = await _standing(lb, unbanned)
    await db_moderation.ban(lb.db, banned, "cheating", "ops")  # PostgreSQL only
    await db_moderation.unban(lb.db, unbanned, "appeal", "ops")
    assert await lb.client.zscore(lb.ranking.keys.scores, banned) is not None
    assert await lb.client.zscore(lb.ranking.keys.scores, unbanned) is None

    t = reconciler.lag_s + 1
    await reconciler.round(now=t)
    await reconciler.round(now=t + reconciler.lag_s)
    assert await lb.client.zscore(lb.ranking.keys.scores, banned) is None
    back = await lb.client.zscore(lb.ranking.keys.scores, unbanned)
    assert back == encode(before.score, before.reached_seq)  # the exact score and tie-break
    assert banned not in await _differences(lb) and unbanned not in await _differences(lb)
    await lb.record(banned, [Standing(ALL_TIME, 1, 999, 1)])  # a late record stays out
    assert await lb.client.zscore(lb.ranking.keys.scores, banned) is None
