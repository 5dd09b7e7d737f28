"""POST /api/action/complete: the happy path, bad input, and what commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api


async def _audit_rows(stack: Stack, user_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        return await conn.fetch(
            "SELECT action_id, points, data, request_id FROM completions WHERE user_id = $1 "
            "ORDER BY id",
            user_id,
        )
    finally:
        await conn.close()


async def _score(stack: Stack, user_id: str) -> int | None:
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        value: int | None = await conn.fetchval(
            "SELECT score FROM scores WHERE user_id = $1", user_id
        )
        return value
    finally:
        await conn.close()


async def test_a_completion_awards_the_catalog_points_and_answers_the_contract(
    api: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user = new_user()
    response = await api.client.post(
        "/api/action/complete",
        json={"actionId": "quiz-basics", "data": {"correct": 9}, "points": 1_000_000},
        headers={**api.headers(user), "X-Request-ID": "req-123"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == {"userId", "actionId", "pointsAwarded", "score", "rank"}
    assert (body["userId"], body["actionId"], body["pointsAwarded"], body["score"]) == (
        user,
        "quiz-basics",
        100,
        100,
    )
    assert isinstance(body["rank"], int) and body["rank"] >= 1
    assert response.headers["X-Request-ID"] == "req-123"
    assert response.headers["RateLimit-Remaining"] == "9"

    rows = await _audit_rows(stack, user)
    assert [(r["action_id"], r["points"], r["request_id"]) for r in rows] == [
        ("quiz-basics", 100, "req-123")
    ]
    assert '"correct": 9' in rows[0]["data"]


async def test_a_second_completion_of_the_same_action_changes_nothing(
    api: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user = new_user()
    assert (await api.complete(user, "first-lesson")).status_code == 200
    again = await api.complete(user, "first-lesson")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "already_completed"
    assert await _score(stack, user) == 50
    assert len(await _audit_rows(stack, user)) == 1


async def test_scores_accumulate_over_actions(
    api: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user = new_user()
    await api.complete(user, "verify-email")
    response = await api.complete(user, "invite-friend", {"channel": "qr-code"})
    assert response.json()["score"] == 40
    assert await _score(stack, user) == 40


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_request"),
        (b"", "invalid_request"),
        (b"[]", "invalid_request"),
        (b'"verify-email"', "invalid_request"),
        (b"{}", "invalid_request"),
        (b'{"actionId": 5}', "invalid_request"),
        (b'{"actionId": null}', "invalid_request"),
        (b'{"actionId": ""}', "invalid_request"),
        (b'{"actionId": "verify-email", "data": "x"}', "invalid_request"),
        (b'{"actionId": "verify-email", "data": [1]}', "invalid_request"),
        (b'{"actionId": "no-such-action"}', "unknown_action"),
        (b'{"actionId": "verify-email", "data": {"x": 1}}', "invalid_action_data"),
        (b'{"actionId": "quiz-basics", "data": {"correct": 11}}', "invalid_action_data"),
        (b'{"actionId": "quiz-basics", "data": {"correct": "9"}}', "invalid_action_data"),
        (b'{"actionId": "quiz-basics"}', "invalid_action_data"),
        (b'{"actionId": "invite-friend", "data": {"channel": "fax"}}', "invalid_action_data"),
    ],
)
async def test_bad_input_is_a_400_in_the_error_format_and_changes_nothing(
    api: Api, stack: Stack, new_user: Callable[[], str], body: bytes, code: str
) -> None:
    user = new_user()
    response = await api.client.post(
        "/api/action/complete",
        content=body,
        headers={**api.headers(user), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    assert await _score(stack, user) is None
    assert await _audit_rows(stack, user) == []


async def test_invalid_action_data_says_what_was_wrong(
    api: Api, new_user: Callable[[], str]
) -> None:
    response = await api.complete(new_user(), "quiz-basics", {"correct": 3})
    assert response.json()["error"]["message"] == "correct: 3 is less than the minimum of 7"


async def test_a_body_over_16_kib_is_refused_with_413(
    api: Api, new_user: Callable[[], str]
) -> None:
    padding = "x" * (16 * 1024)
    response = await api.client.post(
        "/api/action/complete",
        json={"actionId": "verify-email", "data": {"pad": padding}},
        headers=api.headers(new_user()),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_streamed_body_over_the_limit_is_refused_while_reading(
    api: Api, new_user: Callable[[], str]
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: chunked upload
        yield b'{"actionId": "verify-email", "data": {"pad": "'
        for _ in range(40):
            yield b"y" * 1024
        yield b'"}}'

    response = await api.client.post(
        "/api/action/complete", content=chunks(), headers=api.headers(new_user())
    )
    assert response.status_code == 413


async def test_forty_simultaneous_duplicates_commit_exactly_once(
    unlimited: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user = new_user()
    responses = await asyncio.gather(
        *(unlimited.complete(user, "final-exam", {"examId": "e1", "score": 80}) for _ in range(40))
    )
    codes = sorted(r.json()["error"]["code"] if r.status_code != 200 else "ok" for r in responses)
    assert codes == ["already_completed"] * 39 + ["ok"]
    assert await _score(stack, user) == 250
    assert len(await _audit_rows(stack, user)) == 1


async def test_many_simultaneous_completions_for_one_user_are_all_applied(
    unlimited: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user = new_user()
    action_ids = [a for a in unlimited.services.catalog.actions if a.startswith("bulk-")]
    responses = await asyncio.gather(*(unlimited.complete(user, a) for a in action_ids))
    assert {r.status_code for r in responses} == {200}
    rows = await _audit_rows(stack, user)
    assert len(rows) == len(action_ids) == 50
    assert await _score(stack, user) == sum(r["points"] for r in rows) == 50 * 7
    # Each response saw a distinct intermediate score: the updates serialised, none was lost.
    assert sorted(r.json()["score"] for r in responses) == [7 * i for i in range(1, 51)]
