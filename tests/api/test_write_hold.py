"""A completion that finds no writable primary is held and retried, counted once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from leaderboard.db.awards import Award, Completion
from leaderboard.db.pool import DatabaseUnavailable
from leaderboard.errors import AppError
from tests.apiclient import Api


async def test_an_attempt_that_committed_unseen_is_answered_as_committed_not_as_a_repeat(
    api: Api, new_user: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    board = api.services.leaderboard
    real = board.awards.award
    calls = []

    async def commits_then_loses_the_answer(completion: Completion) -> Award:
        calls.append(completion)
        award = await real(completion)
        if len(calls) == 1:  # committed, but the connection died before the answer
            raise DatabaseUnavailable("the answer was lost")
        return award

    monkeypatch.setattr(board.awards, "award", commits_then_loses_the_answer)
    user = new_user()
    done = await board.complete(user, "first-lesson", {}, "req-held-1")
    assert (done.points, done.score) == (50, 50)  # not "already_completed"
    assert len(calls) == 1  # the retry found the commit: no second award was tried
    assert await board.ranking.client.zscore(board.ranking.keys.scores, user) is not None


async def test_the_hold_is_bounded_then_503(
    api: Api, new_user: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    board = api.services.leaderboard
    attempts: list[Any] = []

    async def never(completion: Completion) -> Award:
        attempts.append(completion)
        raise DatabaseUnavailable("no primary")

    async def nothing_committed(*_: Any) -> None:
        return None

    monkeypatch.setattr(board.awards, "award", never)
    monkeypatch.setattr(board, "write_hold_s", 0.5)
    monkeypatch.setattr("leaderboard.db.awards.by_request", nothing_committed)
    with pytest.raises(AppError) as refused:
        await board.complete(new_user(), "first-lesson", {}, "req-held-2")
    assert refused.value.status == 503
    assert 3 <= len(attempts) <= 10  # retried, a few times, then given up
