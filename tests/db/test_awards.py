"""Group commit of awards against the real cluster: completions sent together still each get
their own, exact outcome, and the database ends up as if they had come one at a time."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY

from leaderboard.db.awards import Award, AwardBatcher, Completion
from tests.apiclient import Api

POINTS = {"verify-email": 10, "complete-profile": 20, "first-lesson": 50}


def completion(user: str, action: str) -> Completion:
    return Completion(user, action, "{}", f"t-{uuid.uuid4().hex[:8]}")


def batches_so_far() -> float:
    return REGISTRY.get_sample_value("leaderboard_award_batch_size_count") or 0.0


def observed(histogram: str) -> tuple[float, float]:
    """(count, sum) of a histogram of this process."""
    count = REGISTRY.get_sample_value(f"{histogram}_count") or 0.0
    return count, REGISTRY.get_sample_value(f"{histogram}_sum") or 0.0


async def scores_of(api: Api, users: list[str]) -> dict[str, int]:
    rows = await api.services.db.fetch(
        "SELECT user_id, score FROM scores WHERE user_id = ANY($1::text[])", users
    )
    return {r["user_id"]: r["score"] for r in rows}


async def test_completions_sent_together_each_get_their_own_outcome(
    api: Api, new_user: Callable[[], str]
) -> None:
    batcher = AwardBatcher(api.services.db, max_batches=1)
    users = [new_user() for _ in range(8)]
    wanted = [(u, a) for u in users for a in POINTS]
    wanted += [(users[0], "verify-email"), (users[1], "first-lesson")]  # repeats
    wanted += [(users[2], "no-such-action")]
    random.Random(7).shuffle(wanted)
    before = batches_so_far()
    queued, transactions = (
        observed("leaderboard_award_queue_seconds"),
        observed("leaderboard_award_transaction_seconds"),
    )

    awards = await asyncio.gather(*(batcher.award(completion(u, a)) for u, a in wanted))

    # 27 completions in far fewer transactions: the first alone, the rest together.
    batches = batches_so_far() - before
    assert batches <= 3
    # Where the time went: every completion waited (the first not at all, the rest for it),
    # every batch's transaction was timed.
    queue_count, queue_sum = observed("leaderboard_award_queue_seconds")
    transaction_count, transaction_sum = observed("leaderboard_award_transaction_seconds")
    assert queue_count - queued[0] == len(wanted)
    assert transaction_count - transactions[0] == batches
    assert queue_sum - queued[1] > 0 and transaction_sum - transactions[1] > 0
    by_pair: dict[tuple[str, str], list[Award]] = {}
    for pair, award in zip(wanted, awards, strict=True):
        by_pair.setdefault(pair, []).append(award)
    assert by_pair[users[2], "no-such-action"] == [Award(False, None, None, None)]
    for user in users:
        given = []
        for action, points in POINTS.items():
            outcomes = by_pair[user, action]
            awarded = [a for a in outcomes if a.awarded is not None]
            assert [a.awarded for a in awarded] == [points]  # exactly once, repeats get None
            assert all(a.known_action for a in outcomes)
            given.append(awarded[0])
        # Each completion reports the user's score right after it: running totals.
        given.sort(key=lambda a: a.score or 0)
        assert [a.score for a in given] == [
            sum(a.awarded or 0 for a in given[: i + 1]) for i in range(len(given))
        ]
    assert await scores_of(api, users) == {u: sum(POINTS.values()) for u in users}
    rows = await api.services.db.fetch(
        "SELECT count(*) AS n FROM completions WHERE user_id = ANY($1::text[])", users
    )
    assert rows[0]["n"] == len(users) * len(POINTS)


async def test_concurrent_batches_over_the_same_users_neither_deadlock_nor_double_count(
    api: Api, new_user: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    batcher = AwardBatcher(api.services.db, max_batches=4, max_batch=16)
    users = [new_user() for _ in range(12)]
    wanted = [(u, a) for u in users for a in POINTS] * 3  # every completion three times
    random.Random(11).shuffle(wanted)

    awards = await asyncio.gather(*(batcher.award(completion(u, a)) for u, a in wanted))

    awarded = [pair for pair, a in zip(wanted, awards, strict=True) if a.awarded is not None]
    assert sorted(awarded) == sorted({(u, a) for u in users for a in POINTS})
    assert await scores_of(api, users) == {u: sum(POINTS.values()) for u in users}
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]  # no deadlock


async def test_a_completion_the_database_refuses_fails_alone(
    api: Api, new_user: Callable[[], str]
) -> None:
    batcher = AwardBatcher(api.services.db, max_batches=1)
    first, good = new_user(), [new_user() for _ in range(5)]
    bad = "x" * 200  # violates the scores and completions CHECK on the user id's length
    pending = [
        asyncio.ensure_future(batcher.award(completion(first, "verify-email"))),
        *(asyncio.ensure_future(batcher.award(completion(u, "first-lesson"))) for u in good[:2]),
        asyncio.ensure_future(batcher.award(completion(bad, "first-lesson"))),
        *(asyncio.ensure_future(batcher.award(completion(u, "first-lesson"))) for u in good[2:]),
    ]
    results = await asyncio.gather(*pending, return_exceptions=True)

    failed = results[3]
    assert isinstance(failed, asyncpg.CheckViolationError), failed
    ok = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, Award) and r.awarded is not None for r in ok), ok
    assert await scores_of(api, [first, *good, bad]) == {first: 10} | dict.fromkeys(good, 50)
