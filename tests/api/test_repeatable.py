"""Repeatable actions: counted once per period on the database's clock, refused twice within
it, accepted again in the next; every completion stays in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from leaderboard.catalog import CatalogError, default_catalog_text, parse_catalog
from leaderboard.db.awards import period_sql
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api, api_settings, running_api
from tests.support import eventually

TICK_S = 2
EXTRA = f"""
  - id: tick
    title: A short event
    points: 7
    repeat: {TICK_S}
"""


@pytest_asyncio.fixture
async def ticking(stack: Stack, tmp_path: Path) -> AsyncIterator[Api]:
    """An API whose catalog is the default one plus ``tick``, repeatable every 2 s."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(default_catalog_text() + EXTRA)
    async with running_api(api_settings(stack, catalog_path=catalog)) as running:
        yield running


async def _period(api: Api) -> int:
    row = await api.services.db.fetchrow(f"SELECT {period_sql(str(TICK_S), 'now()')} AS p")
    assert row is not None
    return int(row["p"])


async def _last_period(api: Api, user: str) -> int:
    """The period the user's latest accepted ``tick`` counted in (the database decided)."""
    value = await api.services.db.fetchrow(
        "SELECT max(period) AS p FROM completions WHERE user_id = $1 AND action_id = 'tick'",
        user,
    )
    assert value is not None
    return int(value["p"])


async def test_a_repeatable_action_counts_once_per_period(
    ticking: Api, new_user: Callable[[], str]
) -> None:
    api, user = ticking, new_user()
    first = await api.complete(user, "tick")
    assert first.status_code == 200, first.text
    assert first.json()["pointsAwarded"] == 7
    counted = await _last_period(api, user)
    again = await api.complete(user, "tick")
    if again.status_code == 200:  # the first landed at the very end of a period
        counted = await _last_period(api, user)
        again = await api.complete(user, "tick")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "already_completed"
    assert "in this 2 s period" in again.json()["error"]["message"]
    score = (await api.client.get(f"/api/leaderboard/users/{user}")).json()["score"]

    async def next_period() -> bool:
        return await _period(api) > counted

    await eventually(next_period, timeout=TICK_S * 3, interval=0.1)
    later = await api.complete(user, "tick")
    assert later.status_code == 200, later.text
    assert later.json()["score"] == score + 7
    rows = await api.services.db.fetch(
        "SELECT period FROM completions WHERE user_id = $1 AND action_id = 'tick'", user
    )
    periods = [r["period"] for r in rows]
    assert len(periods) == len(set(periods)) >= 2  # one per period, every one in the audit log
    assert (await api.complete(user, "verify-email")).status_code == 200
    once = await api.complete(user, "verify-email")  # a once-ever action: as before
    assert once.json()["error"]["message"] == f"user {user!r} already completed 'verify-email'"


async def test_the_catalog_says_how_often_each_action_counts(ticking: Api) -> None:
    actions = {a["id"]: a for a in (await ticking.client.get("/api/actions")).json()["actions"]}
    assert actions["verify-email"]["repeat"] == "once"
    assert actions["daily-practice"]["repeat"] == "daily"
    assert actions["tick"]["repeat"] == TICK_S


async def test_weeks_start_on_monday_utc(ticking: Api) -> None:
    def at(ts: str) -> str:
        return period_sql("604800", f"'{ts}'::timestamptz")

    row = await ticking.services.db.fetchrow(
        f"SELECT {at('2026-11-29 23:59:59+00')} AS sunday, {at('2026-11-30 00:00:00+00')} AS "
        f"monday, {at('2026-12-06 23:59:59+00')} AS next_sunday, {at('2026-12-07 00:00:00+00')}"
        " AS next_monday"
    )
    assert row is not None
    assert row["sunday"] + 1 == row["monday"] == row["next_sunday"] == row["next_monday"] - 1


@pytest.mark.parametrize("repeat", ["monthly", 0, -5, "1d"])
def test_a_bad_repeat_stops_the_catalog_naming_the_action(repeat: object) -> None:
    text = f"actions:\n  - id: a\n    title: A\n    points: 1\n    repeat: {repeat}\n"
    with pytest.raises(CatalogError, match=r"^catalog:5: actions/0/repeat: "):
        parse_catalog(text)
