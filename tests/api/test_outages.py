"""When Redis or the PostgreSQL primary goes away, and when they come back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest_asyncio

from leaderboard.cache.errors import REDIS_ERRORS
from leaderboard.db import scores
from leaderboard.standings import UserView
from leaderboard_tools.devstack.redis import RedisServer
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api, api_settings, running_api
from tests.conftest import own_cluster
from tests.support import eventually, free_ports


@pytest_asyncio.fixture
async def own_redis(run_dir: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(free_ports(1)[0], run_dir / "redis")
    server.start()
    try:
        await eventually(server.ping, timeout=10)
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="module")
async def own_stack() -> AsyncIterator[Stack]:
    """A cluster of its own: these tests stop its primary."""
    async with own_cluster("lb-outage-") as cluster:
        yield cluster


async def _ready_ranking(api: Api) -> None:
    async def ready() -> bool:
        try:
            return await api.services.leaderboard.ranking.top() is not None
        except REDIS_ERRORS:  # not back yet
            return False

    await eventually(ready, timeout=10)


async def test_with_redis_down_completions_commit_and_reads_answer_from_postgresql(
    stack: Stack, own_redis: RedisServer, new_user: Callable[[], str]
) -> None:
    async with running_api(api_settings(stack, redis_url=own_redis.url)) as api:
        await _ready_ranking(api)
        own_redis.stop()

        user = new_user()
        done = await api.complete(user, "first-lesson")
        assert done.status_code == 200
        assert done.json() == {
            "userId": user, "actionId": "first-lesson", "pointsAwarded": 50, "score": 50,
            "rank": None,
        }  # fmt: skip
        top = await api.client.get("/api/leaderboard")
        assert top.status_code == 200
        assert top.json()["top"] == await scores.top(api.services.db)
        me = await api.client.get(f"/api/leaderboard/users/{user}")
        assert me.status_code == 200 and me.json()["score"] == 50

        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "postgres": True, "redis": False}

        # The rate limit still holds, per process, while Redis is away.
        burst = new_user()
        codes = [(await api.complete(burst, "verify-email")).status_code for _ in range(11)]
        assert codes.count(429) == 1 and codes[-1] == 429

        # Redis returns empty: the ranking is rebuilt from PostgreSQL, including the
        # completions it missed, and reads go back to Redis.
        own_redis.start()
        await _ready_ranking(api)
        keys = api.services.leaderboard.ranking.keys
        assert await api.services.redis.zscore(keys.scores, user) is not None
        assert await api.services.leaderboard.ranking.top() == await scores.top(api.services.db)
        assert (await api.client.get("/readyz")).status_code == 200


async def test_with_the_primary_down_writes_fail_fast_with_503_and_recover_by_themselves(
    own_stack: Stack, new_user: Callable[[], str], run_dir: Path
) -> None:
    own_redis = RedisServer(free_ports(1)[0], run_dir / "redis")
    own_redis.start()
    settings = api_settings(own_stack, redis_url=own_redis.url, db_timeout_s=1.0)
    try:
        async with running_api(settings) as api:
            await _ready_ranking(api)
            assert (await api.complete(new_user(), "verify-email")).status_code == 200
            primary = own_stack.members[0]
            await asyncio.to_thread(primary.stop)

            refused = await asyncio.wait_for(api.complete(new_user(), "verify-email"), 10)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"
            assert refused.headers["Retry-After"] == "1"
            # Reads do not need the primary while Redis has the ranking.
            assert (await api.client.get("/api/leaderboard")).status_code == 200
            assert (await api.client.get("/readyz")).status_code == 503

            primary.start()

            # A fresh user per attempt: until the standby reconnects, a commit that waits for
            # it times out (503) yet stays committed on the primary, as PostgreSQL does with a
            # cancelled synchronous-replication wait; that user's retry is then, rightly,
            # `already_completed`.
            async def accepted() -> bool:
                response = await api.complete(new_user(), "verify-email")
                assert response.status_code == 200, (response.status_code, response.text)
                return True

            await eventually(accepted, timeout=20)
            await own_stack.wait_streaming(primary)
    finally:
        own_redis.stop()


async def test_a_completion_whose_commit_timed_out_still_reaches_the_ranking(
    own_stack: Stack, own_redis: RedisServer, new_user: Callable[[], str]
) -> None:
    settings = api_settings(own_stack, redis_url=own_redis.url, db_timeout_s=1.0)
    async with running_api(settings) as api:
        await _ready_ranking(api)
        standby = own_stack.members[1]
        await asyncio.to_thread(standby.stop)
        try:
            # The commit waits for the synchronous standby and the request times out: the
            # API cannot know whether it will commit (it will, once the standby is back).
            user = new_user()
            response = await api.complete(user, "verify-email")
            assert response.status_code == 503, response.text
        finally:
            standby.start()
            await own_stack.wait_streaming(own_stack.members[0])

        async def ranked() -> bool:
            view = await api.services.leaderboard.ranking.user(user, 0)
            assert isinstance(view, UserView), view
            return view.score == 10

        await eventually(ranked, timeout=10)
        again = await api.complete(user, "verify-email")
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "already_completed"


async def test_connections_to_a_primary_turned_read_only_are_replaced(
    own_stack: Stack, new_user: Callable[[], str], run_dir: Path
) -> None:
    own_redis = RedisServer(free_ports(1)[0], run_dir / "redis")
    own_redis.start()
    admin = await own_stack.members[0].connect(own_stack.superuser_password)
    try:
        async with running_api(api_settings(own_stack, redis_url=own_redis.url)) as api:
            await _ready_ranking(api)
            assert (await api.complete(new_user(), "verify-email")).status_code == 200
            # What a demoted primary looks like to pooled connections: it refuses writes.
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")

            async def refused() -> bool:
                response = await api.complete(new_user(), "verify-email")
                return response.status_code == 503

            await eventually(refused, timeout=10)

            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            user = new_user()

            async def accepted() -> bool:
                return (await api.complete(user, "verify-email")).status_code == 200

            await eventually(accepted, timeout=10)
            sessions = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leaderboard-api'"
            )
            assert sessions >= 1
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        own_redis.stop()
        assert isinstance(asyncpg.__version__, str)


async def test_a_started_api_records_what_a_killed_one_committed_but_never_ranked(
    api: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    """A process killed between its commit and its Redis update (the chaos campaign's
    kill -9 of the API) leaves a score only PostgreSQL knows; the next API process to start
    finds it among the recent scores and ranks it."""
    user = new_user()
    assert (await api.complete(user, "first-lesson")).status_code == 200
    keys = api.services.leaderboard.ranking.keys
    await api.services.redis.zrem(keys.scores, user)  # as if the update never happened
    async with running_api(api_settings(stack)) as successor:
        board = successor.services.leaderboard

        async def ranked() -> bool:
            return await successor.services.redis.zscore(keys.scores, user) is not None

        await eventually(ranked, timeout=10)
        assert (await board.reads.user(user)).score == 50
    assert await api.services.leaderboard.catch_up(60) == 0  # nothing left to record
