"""The ranking: ties, the Redis and PostgreSQL paths agree, top-10 changes are published once."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from leaderboard.boards import ALL_TIME
from leaderboard.cache.keys import Keys
from leaderboard.cache.ranking import Ranking, decode, encode
from leaderboard.db import scores
from leaderboard.standings import Standing
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api
from tests.support import eventually


class Subscriber:
    """Collects every message published on the updates channel."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self.pubsub = client.pubsub()
        self.channel = channel
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                self.messages.append(json.loads(message["data"]))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.pubsub.aclose()

    async def settle(self) -> list[dict[str, Any]]:
        """Messages so far, once a published marker shows everything before it arrived."""
        marker = {"type": "test-marker"}
        await self.pubsub.connection.send_command("PING")  # type: ignore[union-attr]
        publisher = aioredis.Redis(connection_pool=self.pubsub.connection_pool)
        await publisher.publish(self.channel, json.dumps(marker))

        async def seen() -> bool:
            return marker in self.messages

        await eventually(seen, timeout=5)
        self.messages.remove(marker)
        return list(self.messages)


@pytest_asyncio.fixture
async def updates(empty_board: Api) -> AsyncIterator[Subscriber]:
    svc = empty_board.services
    async with Subscriber(svc.redis, svc.leaderboard.ranking.keys.updates) as subscriber:
        yield subscriber


def _rebuilds_done() -> float:
    value = REGISTRY.get_sample_value("leaderboard_ranking_rebuilds_total", {"result": "done"})
    return value or 0.0


def test_the_encoding_orders_ties_by_who_reached_the_score_first() -> None:
    assert encode(10, 5) > encode(10, 6) > encode(9, 1)
    assert decode(encode(1_048_575, 0)) == 1_048_575
    assert decode(encode(0, 2**33 - 1)) == 0


async def test_a_tie_goes_to_who_reached_the_score_first(empty_board: Api) -> None:
    api = empty_board
    for user in ("first", "second", "third"):
        assert (await api.complete(user, "verify-email")).status_code == 200
    await api.complete("third", "complete-profile")
    top = (await api.client.get("/api/leaderboard")).json()["top"]
    assert [(e["rank"], e["userId"], e["score"]) for e in top] == [
        (1, "third", 30),
        (2, "first", 10),
        (3, "second", 10),
    ]
    # "second" now reaches 30 after "third" did: it ranks below it.
    await api.complete("second", "complete-profile")
    top = (await api.client.get("/api/leaderboard")).json()["top"]
    assert [e["userId"] for e in top] == ["third", "second", "first"]


async def test_the_redis_and_postgresql_paths_return_the_identical_ranking(
    empty_board: Api,
) -> None:
    api = empty_board
    rng = random.Random(7)
    actions = [("verify-email", None), ("complete-profile", None), ("first-lesson", None),
               ("invite-friend", {"channel": "link"})]  # fmt: skip
    users = [f"tie-{i:02d}" for i in range(25)]
    jobs = [
        api.complete(user, action, data)
        for user in users
        for action, data in rng.sample(actions, rng.randint(1, 3))
    ]
    responses = await asyncio.gather(*jobs)
    assert {r.status_code for r in responses} == {200}
    board = api.services.leaderboard

    from_redis = await board.ranking.top()
    from_pg = await scores.top(api.services.db)
    assert from_redis == from_pg
    assert len(from_pg) == 10
    for user in rng.sample(users, 8):
        redis_view = await board.ranking.user(user, 3)
        pg_view = await scores.user_view(api.services.db, user, 3)
        assert redis_view == pg_view


async def test_a_membership_change_is_published_once_and_score_moves_are_not(
    empty_board: Api, updates: Subscriber
) -> None:
    api = empty_board
    for i in range(10):
        await api.complete(f"m-{i}", "verify-email")
    first = await updates.settle()
    assert len(first) == 10  # each of the ten entered an incomplete top 10
    assert [m["seq"] for m in first] == list(range(first[0]["seq"], first[0]["seq"] + 10))

    await api.complete("m-0", "final-exam", {"examId": "x", "score": 99})  # moves to #1
    await api.complete("m-outsider", "verify-email")  # ties #10 but reached it later
    assert await updates.settle() == first

    await api.complete("m-outsider", "first-lesson")  # 60 points: enters, pushes m-9 out
    messages = await updates.settle()
    assert len(messages) == 11
    last = messages[-1]
    assert last["type"] == "top10" and last["seq"] == first[-1]["seq"] + 1
    members = {e["userId"] for e in last["top"]}
    assert "m-outsider" in members and "m-9" not in members
    assert last["top"] == (await api.client.get("/api/leaderboard")).json()["top"]


async def test_concurrent_changes_give_contiguous_seq_and_end_on_the_true_top10(
    empty_board: Api, updates: Subscriber
) -> None:
    api = empty_board
    for i in range(10):
        await api.complete(f"base-{i}", "verify-email")
    before = await updates.settle()

    plans: list[tuple[str, str, dict[str, Any] | None]] = []
    for i in range(20):
        action, data = [
            ("complete-profile", None),
            ("first-lesson", None),
            ("seven-day-streak", {"days": 9}),
            ("quiz-basics", {"correct": 8}),
            ("final-exam", {"examId": "f", "score": 70}),
        ][i % 5]
        plans.append((f"rush-{i:02d}", action, data))
    responses = await asyncio.gather(*(api.complete(u, a, d) for u, a, d in plans))
    assert {r.status_code for r in responses} == {200}

    messages = (await updates.settle())[len(before) :]
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(before[-1]["seq"] + 1, before[-1]["seq"] + 1 + len(seqs)))
    memberships = [frozenset(e["userId"] for e in m["top"]) for m in [before[-1], *messages]]
    assert all(a != b for a, b in itertools.pairwise(memberships))
    assert len(messages) >= 10  # at least the ten base users were each pushed out once
    truth = await scores.top(api.services.db)
    assert messages[-1]["top"] == truth
    assert (await api.client.get("/api/leaderboard")).json()["top"] == truth


async def test_a_users_rank_and_neighbours(empty_board: Api) -> None:
    api = empty_board
    points = {"a": "final-exam", "b": "quiz-basics", "c": "first-lesson", "d": "invite-friend",
              "e": "verify-email"}  # fmt: skip
    data = {"final-exam": {"examId": "z", "score": 61}, "quiz-basics": {"correct": 7},
            "invite-friend": {"channel": "email"}}  # fmt: skip
    for user, action in points.items():
        await api.complete(user, action, data.get(action))
    body = (await api.client.get("/api/leaderboard/users/c")).json()
    assert (body["userId"], body["score"], body["rank"]) == ("c", 50, 3)
    assert [(e["rank"], e["userId"]) for e in body["around"]] == [
        (1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"),
    ]  # fmt: skip
    top_user = (await api.client.get("/api/leaderboard/users/a")).json()
    assert [e["userId"] for e in top_user["around"]] == ["a", "b", "c"]

    missing = await api.client.get("/api/leaderboard/users/nobody")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_user"


async def test_a_flushed_redis_answers_from_postgresql_and_rebuilds_once(
    empty_board: Api,
) -> None:
    api = empty_board
    for i in range(12):
        await api.complete(f"f-{i:02d}", "verify-email" if i % 2 else "first-lesson")
    expected = (await api.client.get("/api/leaderboard")).json()
    expected_user = (await api.client.get("/api/leaderboard/users/f-05")).json()
    assert expected_user["rank"] == 9
    board = api.services.leaderboard
    rebuilds_before = _rebuilds_done()
    await api.services.redis.flushall()

    assert (await api.client.get("/api/leaderboard")).json() == expected
    assert (await api.client.get("/api/leaderboard/users/f-05")).json() == expected_user

    async def rebuilt() -> bool:
        return await board.ranking.top() is not None and _rebuilds_done() > rebuilds_before

    await eventually(rebuilt, timeout=10)
    await api.client.get("/api/leaderboard")
    assert _rebuilds_done() == rebuilds_before + 1
    assert await api.services.redis.zcard(board.ranking.keys.scores) == 12
    assert await board.ranking.top() == expected["top"]


async def test_an_empty_board_has_a_published_state_that_the_first_change_follows_by_one(
    empty_board: Api,
) -> None:
    # empty_board dropped the published state and rebuilt: nothing had changed, yet the
    # state is published once, so a broadcaster hands viewers its seq (not 0) and the first
    # real change is that seq + 1 for them, not a gap up to the clock (seen on a fresh
    # chart-up: every viewer's first change came as a re-sync snapshot).
    svc = empty_board.services
    keys = svc.leaderboard.ranking.keys
    state = json.loads(await svc.redis.hget(keys.top10, "message"))
    assert state["top"] == []
    async with Subscriber(svc.redis, keys.updates) as subscriber:
        assert (await empty_board.complete("first-ever", "verify-email")).status_code == 200
        messages = await subscriber.settle()
    assert [(m["seq"], [e["userId"] for e in m["top"]]) for m in messages] == [
        (state["seq"] + 1, ["first-ever"])
    ]


@pytest.mark.parametrize("suffix", ["a/b", "auth0|abc", "ünïcødé 名前", "a%2Fb", "x/../y"])
async def test_any_user_id_a_token_carries_reads_back(
    api: Api, new_user: Callable[[], str], suffix: str
) -> None:
    """A `sub` with `/`, `|`, spaces or non-ASCII: acknowledged, then readable by its id
    (percent-encoded in the path, as any client library sends it)."""
    from urllib.parse import quote

    user = f"{new_user()}-{suffix}"
    done = await api.complete(user, "verify-email")
    assert done.status_code == 200, done.text
    assert done.json()["userId"] == user
    me = await api.client.get(f"/api/leaderboard/users/{quote(user, safe='')}")
    assert me.status_code == 200, me.text
    assert me.json()["userId"] == user and me.json()["score"] == 10


async def test_the_script_publishes_exactly_when_a_reference_top10_membership_changes(
    stack: Stack,
) -> None:
    """Hundreds of random updates (small and large gains, losses as after an adjustment,
    repeats, users new and old) on a complete ranking, each newer than the last: after each,
    a broadcast iff the membership of a plain Python model's top 10 changed, carrying that top
    10; the rank returned is the model's. A late, older standing changes nothing."""
    client = aioredis.Redis.from_url(stack.redis.url)
    ranking = Ranking(client, Keys(f"model-{random.getrandbits(32):x}:"))
    rng = random.Random(11)
    assert await ranking.rebuild(ALL_TIME, 1, _no_batches) == "done"  # complete, published (empty)
    model: dict[str, tuple[int, int]] = {}  # user -> (score, reached_seq)

    def top10() -> list[tuple[str, int]]:
        ordered = sorted(model.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        return [(user, score) for user, (score, _) in ordered[:10]]

    published = frozenset[str]()
    try:
        for seq in range(2, 1200, 2):
            user = f"u{rng.randrange(40)}"
            score = max(0, model.get(user, (0, 0))[0] + rng.choice([-30, -1, 0, 1, 1, 5, 40]))
            if user in model and rng.random() < 0.1:  # a late record: an older standing
                late = model[user]
                older = Standing(ALL_TIME, 1, late[0] + 9, late[1] - 1)
                again = await ranking.record(user, [older])
                assert again.published_seq is None
            recorded = await ranking.record(user, [Standing(ALL_TIME, 1, score, seq)])
            model[user] = (score, seq)  # the newest standing wins, higher or lower
            truth = top10()
            members = frozenset(u for u, _ in truth)
            assert (recorded.published_seq is not None) == (members != published), seq
            published = members
            ordered = sorted(model, key=lambda u: (-model[u][0], model[u][1]))
            assert recorded.rank == ordered.index(user) + 1
            if recorded.published_seq is not None:
                message = json.loads(await client.hget(ranking.keys.top10, "message") or "")
                assert [(e["userId"], e["score"]) for e in message["top"]] == truth
        assert await ranking.top() == [
            {"rank": i + 1, "userId": u, "score": s} for i, (u, s) in enumerate(top10())
        ]
    finally:
        await client.aclose()


async def _no_batches() -> AsyncIterator[list[tuple[str, int, int]]]:
    return
    yield
