"""The admin API and trusted submissions: scopes, bans, adjustments, erasure, export, audit."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from leaderboard import auth
from leaderboard_tools.devstack.redis import RedisServer
from leaderboard_tools.devstack.stack import Stack
from tests.api.test_ranking import Subscriber
from tests.apiclient import Api, api_settings, running_api
from tests.support import eventually, free_ports


def _admin(api: Api, who: str = "ops-alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.mint(api.settings, who, scope='admin')}"}


async def _top_ids(api: Api) -> list[str]:
    return [e["userId"] for e in (await api.client.get("/api/leaderboard")).json()["top"]]


async def _rows_naming(stack: Stack, user: str) -> dict[str, int]:
    """Rows of every table whose text mentions the user id."""
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        tables = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public'"
            )
        ]
        found = {}
        for table in tables:
            n = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, $1) > 0',  # noqa: S608
                user,
            )
            if n:
                found[table] = n
        return found
    finally:
        await conn.close()


async def test_the_admin_api_needs_the_admin_scope(api: Api) -> None:
    assert (await api.client.get("/api/admin/audit")).status_code == 401
    user = await api.client.get("/api/admin/audit", headers=api.headers("mallory"))
    assert user.status_code == 403 and user.json()["error"]["code"] == "forbidden"
    server = {"Authorization": f"Bearer {auth.mint(api.settings, 'be', scope='server')}"}
    banned = await api.client.post(
        "/api/admin/users/mallory/ban", json={"reason": "x"}, headers=server
    )
    assert banned.status_code == 403
    ok = await api.client.get("/api/admin/audit", headers=_admin(api))
    assert ok.status_code == 200 and "entries" in ok.json()
    # JSON whatever the Content-Type says (curl -d sends a form type), as for completions.
    as_form = await api.client.post(
        "/api/admin/users/mallory/adjustments",
        content=b'{"points": 3, "reason": "curl"}',
        headers={**_admin(api), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert as_form.status_code == 200 and as_form.json()["score"] >= 3
    huge = await api.client.post(
        "/api/admin/users/mallory/ban",
        content=b'{"reason": "' + b"x" * 20_000 + b'"}',
        headers=_admin(api),
    )
    assert huge.status_code == 413


async def test_a_ban_during_completions_drops_the_user_and_an_unban_restores_them(
    empty_board: Api, unlimited: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    api = empty_board
    cheater, others = new_user(), [new_user() for _ in range(3)]
    for user in others:
        assert (await api.complete(user, "first-lesson")).status_code == 200
    assert (await api.complete(cheater, "quiz-basics", {"correct": 8})).status_code == 200
    assert (await _top_ids(api))[0] == cheater
    before = (await api.client.get(f"/api/leaderboard/users/{cheater}")).json()

    svc = api.services
    async with Subscriber(svc.redis, svc.leaderboard.ranking.keys.updates) as updates:
        # The cheater keeps completing (through a second API process) while the ban lands.
        racing = [unlimited.complete(cheater, f"bulk-{i:02d}") for i in range(20)]
        ban = api.client.post(
            f"/api/admin/users/{cheater}/ban", json={"reason": "aimbot"}, headers=_admin(api)
        )
        *answers, banned = await asyncio.gather(*racing, ban)
        assert banned.status_code == 200, banned.text
        assert {a.status_code for a in answers} <= {200, 403}
        messages = await updates.settle()
    assert cheater not in await _top_ids(api)
    assert messages and cheater not in {e["userId"] for e in messages[-1]["top"]}
    refused = await unlimited.complete(cheater, "verify-email")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    gone = await api.client.get(f"/api/leaderboard/users/{cheater}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_user"
    assert cheater not in str((await api.client.get("/api/leaderboards/weekly")).json())

    lifted = await api.client.request(
        "DELETE", f"/api/admin/users/{cheater}/ban", json={"reason": "appeal"},
        headers=_admin(api),
    )  # fmt: skip
    assert lifted.status_code == 200
    after = (await api.client.get(f"/api/leaderboard/users/{cheater}")).json()
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        score = await conn.fetchval("SELECT score FROM scores WHERE user_id = $1", cheater)
        earned = await conn.fetchval(
            "SELECT sum(points) FROM completions WHERE user_id = $1", cheater
        )
    finally:
        await conn.close()
    # Exactly what PostgreSQL holds: the completions committed before the ban took effect.
    assert after["score"] == score == earned >= before["score"]
    assert after["rank"] == 1
    log = (await api.client.get("/api/admin/audit", headers=_admin(api))).json()["entries"]
    assert [(e["action"], e["userId"], e["reason"]) for e in log[:2]] == [
        ("unban", cheater, "appeal"),
        ("ban", cheater, "aimbot"),
    ]


async def test_an_adjustment_moves_the_user_and_is_in_the_audit_log(
    empty_board: Api, new_user: Callable[[], str]
) -> None:
    api = empty_board
    a, b = new_user(), new_user()
    assert (await api.complete(a, "quiz-basics", {"correct": 8})).status_code == 200  # 100
    assert (await api.complete(b, "first-lesson")).status_code == 200  # 50
    assert await _top_ids(api) == [a, b]
    taken = await api.client.post(
        f"/api/admin/users/{a}/adjustments",
        json={"points": -60, "reason": "refund"},
        headers=_admin(api),
    )
    assert taken.status_code == 200, taken.text
    assert taken.json()["score"] == 40 and taken.json()["rank"] == 2
    assert await _top_ids(api) == [b, a]
    below = await api.client.post(
        f"/api/admin/users/{a}/adjustments",
        json={"points": -41, "reason": "too much"},
        headers=_admin(api),
    )
    assert below.status_code == 400 and below.json()["error"]["code"] == "invalid_request"
    entry = (await api.client.get("/api/admin/audit", headers=_admin(api))).json()["entries"][0]
    assert (entry["action"], entry["userId"], entry["reason"]) == ("adjust", a, "refund")
    assert entry["detail"]["points"] == -60 and entry["actor"] == "ops-alice"
    for bad in ({"points": "5", "reason": "x"}, {"points": 5}, {"points": 0, "reason": "x"}):
        answer = await api.client.post(
            f"/api/admin/users/{a}/adjustments", json=bad, headers=_admin(api)
        )
        assert answer.status_code == 400, bad


async def test_export_then_erase_leaves_no_row_or_key_with_the_id(
    empty_board: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    api = empty_board
    user = new_user()
    assert (await api.complete(user, "quiz-basics", {"correct": 7})).status_code == 200
    assert (await api.complete(user, "first-lesson")).status_code == 200
    await api.client.post(
        f"/api/admin/users/{user}/adjustments", json={"points": 5, "reason": "bonus"},
        headers=_admin(api),
    )  # fmt: skip
    exported = await api.client.get(f"/api/admin/users/{user}", headers=_admin(api))
    assert exported.status_code == 200
    doc: dict[str, Any] = exported.json()
    assert doc["score"] == 155
    assert sorted(c["actionId"] for c in doc["completions"]) == ["first-lesson", "quiz-basics"]
    assert doc["adjustments"][0]["points"] == 5

    erased = await api.client.delete(f"/api/admin/users/{user}", headers=_admin(api))
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["completions"] == 2
    assert await _rows_naming(stack, user) == {}
    redis = api.services.redis
    async for key in redis.scan_iter(count=1000):
        name = key.decode()
        assert user not in name
        kind = (await redis.type(key)).decode()
        if kind == "zset":
            assert await redis.zscore(key, user) is None, name
        elif kind == "hash":
            assert user not in str(await redis.hgetall(key)), name
    for path in (f"/api/leaderboard/users/{user}", f"/api/leaderboards/weekly/users/{user}"):
        assert (await api.client.get(path)).status_code == 404
    assert (
        await api.client.get(f"/api/admin/users/{user}", headers=_admin(api))
    ).status_code == 404
    # What stays for the books: that it happened, by whom, and how much; not the id.
    entry = (await api.client.get("/api/admin/audit", headers=_admin(api))).json()["entries"][0]
    assert entry["action"] == "erase" and entry["userId"] is None
    assert entry["detail"]["completions"] == 2


async def test_with_server_only_submission_a_user_token_cannot_complete(
    stack: Stack, new_user: Callable[[], str]
) -> None:
    settings = api_settings(stack, require_server_scope=True)
    async with running_api(settings) as api:
        user = new_user()
        mine = await api.complete(user, "first-lesson")
        assert mine.status_code == 403 and mine.json()["error"]["code"] == "forbidden"
        backend = {"Authorization": f"Bearer {auth.mint(settings, 'game-server', scope='server')}"}
        done = await api.client.post(
            "/api/action/complete",
            json={"actionId": "first-lesson", "userId": user},
            headers=backend,
        )
        assert done.status_code == 200, done.text
        assert done.json()["userId"] == user and done.json()["pointsAwarded"] == 50
        unnamed = await api.client.post(
            "/api/action/complete", json={"actionId": "first-lesson"}, headers=backend
        )
        assert unnamed.status_code == 400


async def test_a_user_token_cannot_complete_for_someone_else(
    api: Api, new_user: Callable[[], str]
) -> None:
    user, other = new_user(), new_user()
    answer = await api.client.post(
        "/api/action/complete",
        json={"actionId": "first-lesson", "userId": other},
        headers=api.headers(user),
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    assert (await api.client.get(f"/api/leaderboard/users/{other}")).status_code == 404


async def test_a_ban_redis_misses_says_so_and_a_repeat_finishes_it(
    stack: Stack, run_dir: Path, new_user: Callable[[], str]
) -> None:
    """Redis hangs while a ban commits: 503 (the ban holds in PostgreSQL), and the same
    request once Redis answers drops the user from the ranking Redis kept."""
    redis = RedisServer(free_ports(1)[0], run_dir / "redis")
    redis.start()
    try:
        await eventually(redis.ping, timeout=10)
        settings = api_settings(stack, redis_url=redis.url, redis_timeout_s=0.3)
        async with running_api(settings) as api:
            user = new_user()
            assert (await api.complete(user, "first-lesson")).status_code == 200
            keys = api.services.leaderboard.ranking.keys
            assert await api.services.redis.zscore(keys.scores, user) is not None
            pid = redis.pid()
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                ban = await api.client.post(
                    f"/api/admin/users/{user}/ban", json={"reason": "x"}, headers=_admin(api)
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert ban.status_code == 503 and ban.json()["error"]["code"] == "unavailable"
            assert "repeat" in ban.json()["error"]["message"]
            assert await api.services.redis.zscore(keys.scores, user) is not None  # missed
            refused = await api.complete(user, "verify-email")
            assert refused.status_code == 403  # in force already
            again = await api.client.post(
                f"/api/admin/users/{user}/ban", json={"reason": "x"}, headers=_admin(api)
            )
            assert again.status_code == 200
            assert await api.services.redis.zscore(keys.scores, user) is None
    finally:
        redis.stop()
