"""Boards and seasons: a board resets on its schedule, a completion counts in the season that
holds the database's clock at its commit (on every API process), archived seasons read back
exactly, a reset is broadcast with the next seq, and pages are stable under writes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from leaderboard.boards import Board, ScheduleError, following
from leaderboard.catalog import CatalogError, default_catalog_text, parse_catalog
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api, api_settings, running_api
from tests.support import eventually

SEASON_S = 3
EXTRA_ACTIONS = """
  - id: sprint
    title: A sprint
    points: 3
    repeat: 1
  - id: per-season
    title: Once per season of the tick board
    points: 4
    repeat: {season: tick}
"""
EXTRA_BOARDS = f"""
  - id: tick
    title: Every {SEASON_S} seconds
    actions: [sprint, per-season]
    reset: "*/{SEASON_S} * * * * *"
"""


def _catalog_text() -> str:
    text = default_catalog_text().rstrip() + "\n" + EXTRA_ACTIONS
    return text.replace("boards:\n", "boards:\n" + EXTRA_BOARDS.lstrip("\n"), 1)


@pytest_asyncio.fixture
async def ticking(stack: Stack, tmp_path: Path) -> AsyncIterator[tuple[Api, Api]]:
    """Two API processes-alike sharing a catalog with the ``tick`` board (a season every
    3 s) and its two actions."""
    path = tmp_path / "catalog.yaml"
    path.write_text(_catalog_text())
    settings = api_settings(stack, catalog_path=path, rate_limit=1000)
    async with running_api(settings) as one, running_api(settings) as two:
        yield one, two


async def _season_now(api: Api, board: str) -> int:
    row = await api.services.db.fetchrow(
        "SELECT season FROM seasons WHERE board_id = $1 AND starts_at <= now()"
        " AND (ends_at IS NULL OR now() < ends_at)",
        board,
    )
    assert row is not None
    return int(row["season"])


@contextlib.asynccontextmanager
async def _listening(stack: Stack, channel: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published on ``channel`` while inside, decoded."""
    client = aioredis.Redis.from_url(stack.redis.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    received: list[dict[str, Any]] = []

    async def pump() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                received.append(orjson.loads(message["data"]))

    task = asyncio.create_task(pump())
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def test_completions_land_in_the_season_of_their_commit_on_every_process(
    ticking: tuple[Api, Api], stack: Stack, new_user: Callable[[], str]
) -> None:
    one, two = ticking

    async def complete_four() -> list[str]:
        batch = [new_user() for _ in range(4)]
        replies = await asyncio.gather(
            *(api.complete(u, "sprint") for api, u in zip([one, two] * 2, batch, strict=True))
        )
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return batch

    # Completions from both processes, up to a boundary and past it. The boundary is taken
    # from where the first ones landed (their commit, not the moment before sending them: a
    # slow first commit may already fall in the next season).
    users = await complete_four()
    landed = await one.services.db.fetch(
        "SELECT max(season) AS season FROM board_scores WHERE board_id = 'tick'"
        " AND user_id = ANY ($1)",
        users,
    )
    start = int(landed[0]["season"])
    after = 0
    while after < 3:
        if await _season_now(one, "tick") >= start + 1:  # sent after it: a later season
            after += 1
        users += await complete_four()
    # Each one counted in the season holding its commit on the database's clock.
    rows = await one.services.db.fetch(
        "SELECT c.user_id, c.completed_at, bs.season,"
        " (SELECT s.season FROM seasons s WHERE s.board_id = 'tick'"
        "   AND s.starts_at <= c.completed_at AND c.completed_at < s.ends_at) AS expected"
        " FROM completions c JOIN board_scores bs"
        "   ON bs.board_id = 'tick' AND bs.user_id = c.user_id"
        " WHERE c.user_id = ANY ($1) AND c.action_id = 'sprint'",
        users,
    )
    assert len(rows) == len(users)
    assert all(r["season"] == r["expected"] for r in rows)
    seasons = {r["season"] for r in rows}
    assert len(seasons) >= 2, "the completions should straddle a boundary"

    # An archived season reads back exactly what PostgreSQL holds, in ranking order.
    archived = min(seasons)

    async def archived_now() -> bool:
        return await _season_now(one, "tick") > archived

    await eventually(archived_now, timeout=SEASON_S * 3)
    truth = await one.services.db.fetch(
        "SELECT user_id, score FROM board_scores WHERE board_id = 'tick' AND season = $1"
        " ORDER BY score DESC, reached_seq",
        archived,
    )
    got: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"season": archived, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = await two.client.get("/api/leaderboards/tick", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["season"] == archived
        got += body["top"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert [(e["userId"], e["score"]) for e in got] == [(r["user_id"], r["score"]) for r in truth]
    assert [e["rank"] for e in got] == list(range(1, len(truth) + 1))


async def test_a_reset_is_broadcast_with_the_next_seq_and_an_empty_top10(
    ticking: tuple[Api, Api], stack: Stack, new_user: Callable[[], str]
) -> None:
    one, _ = ticking
    channel = one.services.leaderboard.ranking.keys.board("tick").updates
    async with _listening(stack, channel) as received:
        user = new_user()  # 7 points: first on the board, whoever else is on it
        assert (await one.complete(user, "sprint")).status_code == 200
        assert (await one.complete(user, "per-season")).status_code == 200

        async def a_reset_after_the_user() -> bool:
            seen = [m for m in received if any(e["userId"] == user for e in m["top"])]
            return bool(seen) and any(m["season"] > seen[0]["season"] for m in received)

        await eventually(a_reset_after_the_user, timeout=SEASON_S * 3)
    seqs = [m["seq"] for m in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq stays contiguous"
    mine = next(i for i, m in enumerate(received) if any(e["userId"] == user for e in m["top"]))
    reset = next(m for m in received[mine:] if m["season"] > received[mine]["season"])
    assert reset["board"] == "tick"
    assert reset["top"] == []  # nobody completed anything in the new season yet
    # The current season's top 10 says the same.
    page = (await one.client.get("/api/leaderboards/tick")).json()
    assert page["season"] >= reset["season"]


async def test_an_action_repeating_per_season_counts_once_per_season(
    ticking: tuple[Api, Api], new_user: Callable[[], str]
) -> None:
    one, two = ticking
    user = new_user()
    first = await one.complete(user, "per-season")
    assert first.status_code == 200, first.text
    season = await _season_now(one, "tick")
    again = await two.complete(user, "per-season")
    if again.status_code == 200:  # the first landed at the very end of a season
        season = await _season_now(one, "tick")
        again = await two.complete(user, "per-season")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "already_completed"
    assert "season of 'tick'" in again.json()["error"]["message"]

    async def next_season() -> bool:
        return await _season_now(one, "tick") > season

    await eventually(next_season, timeout=SEASON_S * 3)
    later = await two.complete(user, "per-season")
    assert later.status_code == 200, later.text


async def test_the_weekly_board_counts_every_action_and_lists_with_its_season(
    api: Api, new_user: Callable[[], str]
) -> None:
    user = f"auth0|{new_user()}/ü"
    assert (await api.complete(user, "verify-email")).status_code == 200
    listed = (await api.client.get("/api/leaderboards")).json()["boards"]
    by_id = {b["id"]: b for b in listed}
    assert (by_id["all-time"]["season"], by_id["all-time"]["startsAt"]) == (1, None)
    assert by_id["all-time"]["endsAt"] is None
    weekly = by_id["weekly"]
    assert weekly["reset"] == "0 0 * * 1" and weekly["actions"] == "all"
    ends = datetime.fromisoformat(weekly["endsAt"])
    assert ends.weekday() == 0 and (ends.hour, ends.minute) == (0, 0)
    assert timedelta(0) < ends - datetime.now(UTC) <= timedelta(days=7)

    mine = await api.client.get(f"/api/leaderboards/weekly/users/{user}")
    assert mine.status_code == 200, mine.text
    assert mine.json()["score"] == 10 and mine.json()["userId"] == user
    assert mine.json()["season"] == weekly["season"]
    assert mine.json()["endsAt"] == weekly["endsAt"]
    # The all-time board through the new endpoints is today's board.
    assert (await api.client.get("/api/leaderboards/all-time")).json()["top"] == (
        await api.client.get("/api/leaderboard")
    ).json()["top"]


async def test_pages_are_stable_under_concurrent_writes(
    api: Api, new_user: Callable[[], str]
) -> None:
    async def ranking() -> list[str]:
        rows = await api.services.db.fetch(
            "SELECT user_id FROM scores ORDER BY score DESC, reached_seq"
        )
        return [r["user_id"] for r in rows]

    for _ in range(12):
        assert (await api.complete(new_user(), "verify-email")).status_code == 200
    before = await ranking()
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            await api.complete(new_user(), "complete-profile")  # lands mid-ranking

    task = asyncio.create_task(writer())
    seen: list[str] = []
    cursor = None
    try:
        while True:
            params: dict[str, Any] = {"limit": 5}
            if cursor:
                params["cursor"] = cursor
            body = (await api.client.get("/api/leaderboards/all-time", params=params)).json()
            seen += [e["userId"] for e in body["top"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        await task
    # Users who did not move appear once each, in their order.
    assert [u for u in seen if u in set(before)] == before


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/leaderboards/nope", 404, "unknown_board"),
        ("/api/leaderboards/weekly?season=0", 400, "invalid_request"),
        ("/api/leaderboards/weekly?season=abc", 400, "invalid_request"),
        ("/api/leaderboards/weekly?season=999999", 404, "unknown_season"),
        ("/api/leaderboards/all-time?season=2", 404, "unknown_season"),
        ("/api/leaderboards/weekly?limit=0", 400, "invalid_request"),
        ("/api/leaderboards/weekly?limit=101", 400, "invalid_request"),
        ("/api/leaderboards/weekly?cursor=not-a-cursor", 400, "invalid_request"),
        ("/api/leaderboards/weekly?cursor=WzEsMiwzXQ", 400, "invalid_request"),  # [1,2,3]
        # [2**40, 1, 2, 3]: a season past SQL's integer
        ("/api/leaderboards/weekly?cursor=WzEwOTk1MTE2Mjc3NzYsMSwyLDNd", 400, "invalid_request"),
        ("/api/leaderboards/weekly/users/nobody-here", 404, "unknown_user"),
        ("/api/leaderboards/nope/users/someone", 404, "unknown_board"),
    ],
)
async def test_bad_board_requests_get_a_clear_error(
    api: Api, path: str, status: int, code: str
) -> None:
    reply = await api.client.get(path)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code


async def test_a_season_written_ahead_is_not_readable_before_it_starts(api: Api) -> None:
    listed = (await api.client.get("/api/leaderboards")).json()["boards"]
    upcoming = next(b for b in listed if b["id"] == "weekly")["season"] + 1
    reply = await api.client.get(f"/api/leaderboards/weekly?season={upcoming}")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "unknown_season"
    assert "has not started" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("boards", "expected"),
    [
        ("  - {id: w, title: W, reset: 'every monday'}\n", "catalog:4: board 'w': bad reset"),
        ("  - {id: w, title: W, reset: '@daily', timezone: Mars/Base}\n", "unknown time zone"),
        ("  - {id: w, title: W, actions: [nope]}\n", "catalog:4: board 'w': no action 'nope'"),
        ("  - {id: all-time, title: Again}\n", "catalog:4: boards/0/id"),
        ("  - {id: w, title: W}\n  - {id: w, title: W}\n", "board 'w' is defined twice"),
    ],
)
def test_a_bad_board_refuses_the_catalog_naming_its_line(boards: str, expected: str) -> None:
    text = "actions:\n  - {id: a, title: A, points: 1}\nboards:\n" + boards
    with pytest.raises(CatalogError, match=expected.replace("(", r"\(")):
        parse_catalog(text, "catalog")


def test_an_action_repeating_per_season_needs_a_board() -> None:
    text = "actions:\n  - {id: a, title: A, points: 1, repeat: {season: nope}}\n"
    with pytest.raises(CatalogError, match=r"catalog:2: .*not a board"):
        parse_catalog(text, "catalog")


def test_seasons_follow_the_schedule_in_its_time_zone_and_skip_a_gap() -> None:
    board = Board("w", "W", reset="0 0 * * 1", timezone="Europe/Berlin")
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday
    seasons = list(following(board, None, now))
    assert seasons[0].starts_at == now
    # Monday 00:00 in Berlin is Sunday 23:00 UTC in winter.
    assert seasons[0].ends_at == datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    assert [s.number for s in seasons] == list(range(1, len(seasons) + 1))
    assert all(a.ends_at == b.starts_at for a, b in itertools.pairwise(seasons))
    # Written for weeks nobody ran: one empty season up to the next reset, not one per week.
    later = now + timedelta(days=30)
    gap = next(following(board, seasons[-1], later))
    assert gap.starts_at == seasons[-1].ends_at
    assert gap.ends_at is not None and later < gap.ends_at <= later + timedelta(days=7)
    with pytest.raises(ScheduleError):
        Board("x", "X", reset="61 * * * *")
