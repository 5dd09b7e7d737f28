"""10 requests per user per 60 s, exact under concurrency, with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from leaderboard.cache.ratelimit import LocalRateLimiter
from tests.apiclient import Api


async def test_forty_simultaneous_requests_from_one_user_admit_exactly_ten(
    api: Api, new_user: Callable[[], str]
) -> None:
    user = new_user()
    responses = await asyncio.gather(*(api.complete(user, "verify-email") for _ in range(40)))
    limited = [r for r in responses if r.status_code == 429]
    admitted = [r for r in responses if r.status_code != 429]
    assert len(admitted) == 10 and len(limited) == 30
    assert sorted(r.status_code for r in admitted) == [200] + [400] * 9  # one award, 9 repeats
    for response in limited:
        assert response.json()["error"]["code"] == "rate_limited"
        assert 55 <= int(response.headers["Retry-After"]) <= 60
        assert response.headers["RateLimit-Remaining"] == "0"
        assert response.headers["RateLimit-Limit"] == "10"
    remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in admitted)
    assert remaining == list(range(10))


async def test_other_users_are_not_limited_by_someone_elses_burst(
    api: Api, new_user: Callable[[], str]
) -> None:
    noisy, quiet = new_user(), new_user()
    await asyncio.gather(*(api.complete(noisy, "verify-email") for _ in range(12)))
    assert (await api.complete(quiet, "verify-email")).status_code == 200


def test_the_local_fallback_slides_its_window() -> None:
    limiter = LocalRateLimiter(limit=3, window_s=60)
    assert [limiter.hit("u", now=t).admitted for t in (0, 10, 20, 30)] == [True] * 3 + [False]
    refused = limiter.hit("u", now=30)
    assert refused.reset_s == 30 and refused.headers(60)["Retry-After"] == "30"
    assert limiter.hit("u", now=60.5).admitted  # the request at t=0 left the window
    assert not limiter.hit("u", now=61).admitted


def test_the_local_fallback_forgets_the_least_recent_users_first() -> None:
    limiter = LocalRateLimiter(limit=1, window_s=60, max_users=2)
    limiter.hit("a", now=0)
    limiter.hit("b", now=0)
    limiter.hit("c", now=0)  # "a" is dropped to bound memory
    assert limiter.hit("a", now=1).admitted
    assert not limiter.hit("c", now=1).admitted
