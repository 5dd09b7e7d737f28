"""How many a board ranks (`total`), where a user stands among them (`percentile`), and a list
of users ranked together (a friends list): exact, and the same from Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from leaderboard.catalog import default_catalog_text
from leaderboard.db import scores
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api, api_settings, running_api
from tests.support import eventually

# Each user's score is a sum of distinct powers of two (one action each).
ACTIONS = "".join(
    f"  - id: counted-{p}\n    title: Worth {p}\n    points: {p}\n" for p in (1, 2, 4, 8)
)
BOARD = f"counted-{uuid.uuid4().hex[:8]}"  # a board of this run: counts exact on the shared cluster


@pytest_asyncio.fixture(scope="module")
async def counted(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Api, list[str]]]:
    """An API with a board of its own (and its own actions) and five users on it, scored 9,
    6, 6, 3 and 1: the first 6 reached before the second."""
    board = f"  - id: {BOARD}\n    title: Counted\n    reset: never\n    actions: ["
    board += ", ".join(f"counted-{p}" for p in (1, 2, 4, 8)) + "]\n"
    text = default_catalog_text().rstrip() + "\n" + ACTIONS
    path = tmp_path_factory.mktemp("counted") / "catalog.yaml"
    path.write_text(text.replace("boards:\n", "boards:\n" + board, 1))
    async with running_api(api_settings(stack, catalog_path=path, rate_limit=1000)) as api:
        users = [f"c-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
        for user, parts in zip(users, [(1, 8), (2, 4), (4, 2), (1, 2), (1,)], strict=True):
            for p in parts:
                reply = await api.complete(user, f"counted-{p}")
                assert reply.status_code == 200, reply.text
        yield api, users


async def _redis_ready(api: Api) -> None:
    """Reads come from Redis: the board's ranking rebuilt from PostgreSQL."""

    async def ready() -> bool:
        await api.client.get(f"/api/leaderboards/{BOARD}")  # schedules the rebuild
        return await api.services.leaderboard.ranking.is_ready(BOARD)

    await eventually(ready, timeout=15)


async def test_total_percentile_and_a_friends_list_are_exact(
    counted: tuple[Api, list[str]],
) -> None:
    api, users = counted
    await _redis_ready(api)
    page = (await api.client.get(f"/api/leaderboards/{BOARD}")).json()
    assert [(e["userId"], e["score"]) for e in page["top"]] == [
        (users[0], 9),
        (users[1], 6),
        (users[2], 6),  # reached 6 after users[1]
        (users[3], 3),
        (users[4], 1),
    ]
    assert page["total"] == 5
    for rank, user in enumerate(users, 1):
        view = (await api.client.get(f"/api/leaderboards/{BOARD}/users/{user}")).json()
        assert (view["rank"], view["percentile"]) == (rank, 100 * (5 - rank + 1) / 5)

    asked = f"{users[3]},nobody-{uuid.uuid4().hex[:6]},{users[1]},{users[3]}"
    listed = await api.client.get(f"/api/leaderboards/{BOARD}/users", params={"ids": asked})
    assert listed.status_code == 200, listed.text
    assert listed.json()["users"] == [  # best first, global ranks, the unknown id left out
        {"rank": 2, "userId": users[1], "score": 6},
        {"rank": 4, "userId": users[3], "score": 3},
    ]
    assert listed.json()["total"] == 5 and listed.json()["board"] == BOARD


async def test_postgresql_answers_the_same_counts_and_lists_as_redis(
    counted: tuple[Api, list[str]],
) -> None:
    api, users = counted
    await _redis_ready(api)
    ranking, db = api.services.leaderboard.ranking, api.services.db
    source = scores.Source(BOARD, 1)
    from_redis = await ranking.users(list(reversed(users)), BOARD)
    assert from_redis is not None
    assert from_redis.entries == await scores.users(db, source, list(reversed(users)))
    assert from_redis.total == await scores.count(db, source) == 5
    page = await ranking.page(BOARD, 0, 10)
    assert page is not None and page.entries == await scores.page(db, source, None, 10)
    for user in users:
        view = await ranking.user(user, 2, BOARD)
        assert view == await scores.user_view(db, user, 2, source)


async def test_a_friends_list_from_postgresql_while_redis_cannot_answer(
    counted: tuple[Api, list[str]],
) -> None:
    api, users = counted
    await _redis_ready(api)
    ids = ",".join(users)
    expected = (await api.client.get(f"/api/leaderboards/{BOARD}/users?ids={ids}")).json()
    api.services.leaderboard.breaker.failed("test", RuntimeError("as if Redis were down"))
    try:
        reply = await api.client.get(f"/api/leaderboards/{BOARD}/users?ids={ids}")
        view = await api.client.get(f"/api/leaderboards/{BOARD}/users/{users[4]}")
    finally:
        api.services.leaderboard.breaker.reset()
    assert reply.json() == expected
    assert view.json()["percentile"] == 20.0 and view.json()["rank"] == 5


async def test_bad_lists_of_users_get_a_clear_error(counted: tuple[Api, list[str]]) -> None:
    api, _ = counted
    for params, status in [
        ({}, 400),
        ({"ids": ""}, 400),
        ({"ids": ",,"}, 400),
        ({"ids": ",".join(f"u{i}" for i in range(101))}, 400),
        ({"ids": "x" * 129}, 400),
        ({"ids": "a", "season": "0"}, 400),
    ]:
        reply = await api.client.get(f"/api/leaderboards/{BOARD}/users", params=params)
        assert reply.status_code == status, (params, reply.text)
        assert reply.json()["error"]["code"] == "invalid_request"
    reply = await api.client.get("/api/leaderboards/nope/users", params={"ids": "a"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_board"
