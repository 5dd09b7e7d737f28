"""The moderator's rules on made-up histories: each rule catches its violation and says
whose, and a history that keeps them passes."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from leaderboard_tools.chaos.moderator import Episode, Held, Step, held, summary, violations
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api


def _step(what: str, sent: float, status: int | None, **kw: object) -> Step:
    return Step(what, sent, None if status is None else sent + 0.1, status, **kw)  # type: ignore[arg-type]


def _held(**kw: object) -> Held:
    base: dict[str, object] = {
        "completions": {"u": {"a", "b"}},
        "completion_points": {"u": 30},
        "adjustments": {"u": [-5]},
        "scores": {"u": (25, False)},
        "naming": {"u"},
        "ranked": {"u"},
    }
    base.update(kw)
    return Held(**base)  # type: ignore[arg-type]


def _episode() -> Episode:
    """Two completions racing a ban, one refused after it, an unban, an adjustment."""
    return Episode(
        "u",
        [
            _step("complete", 1.0, 200, action="a"),
            _step("ban", 1.01, 200),
            _step("complete", 1.02, 200, action="b"),  # sent before the ban was answered
            _step("complete", 2.0, 403, action="c"),
            _step("unban", 3.0, 200),
            _step("adjust", 4.0, 200, points=-5),
        ],
    )


def test_a_history_that_keeps_the_rules_passes() -> None:
    assert violations([_episode()], _held()) == []
    assert summary([_episode()])["complete_ok"] == 2


def test_a_completion_acknowledged_while_banned_is_a_violation() -> None:
    ep = _episode()
    ep.steps[3].status = 200
    found = violations([ep], _held(completions={"u": {"a", "b", "c"}}))
    assert any("c acknowledged while banned" in v for v in found)


def test_a_lost_acknowledged_completion_is_a_violation() -> None:
    found = violations([_episode()], _held(completions={"u": {"a"}}))
    assert any("acknowledged b is not in completions" in v for v in found)


def test_an_adjustment_lost_or_applied_twice_is_a_violation() -> None:
    assert violations([_episode()], _held(adjustments={}, scores={"u": (30, False)}))
    twice = _held(adjustments={"u": [-5, -5]}, scores={"u": (20, False)})
    assert any("adjustments acknowledged" in v for v in violations([_episode()], twice))
    # An adjustment whose answer was lost may or may not be there.
    ep = _episode()
    ep.steps[-1].status = None
    assert violations([ep], _held()) == []
    assert violations([ep], _held(adjustments={}, scores={"u": (30, False)})) == []


def test_a_score_that_is_not_its_completions_and_adjustments_is_a_violation() -> None:
    found = violations([_episode()], _held(scores={"u": (35, False)}))
    assert any("score 35" in v for v in found)


def test_the_last_ban_or_unban_decides_whether_the_user_is_ranked() -> None:
    assert violations([_episode()], _held(ranked=set()))  # unbanned but not ranked
    ep = _episode()
    del ep.steps[4]  # no unban: still banned
    assert violations([ep], _held(scores={"u": (25, True)}, ranked=set())) == []
    assert violations([ep], _held(scores={"u": (25, True)}))  # banned but ranked


def test_an_erased_user_named_anywhere_is_a_violation() -> None:
    ep = _episode()
    ep.steps.append(_step("erase", 5.0, 200))
    ep.steps.append(_step("complete", 6.0, 403, action="d"))
    gone = _held(completions={}, completion_points={}, adjustments={}, scores={}, naming=set(),
                 ranked=set())  # fmt: skip
    assert violations([ep], gone) == []
    assert violations([ep], _held(completions={}, naming=set(), ranked={"u"}))
    ep.steps[-1].status = 200
    assert any("d acknowledged while banned or erased" in v for v in violations([ep], gone))


async def test_what_the_check_reads_from_a_real_database(
    api: Api, stack: Stack, new_user: Callable[[], str]
) -> None:
    user, nobody = new_user(), new_user()
    assert (await api.complete(user, "verify-email")).status_code == 200
    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        state = await held(conn, {user, "elsewhere"}, [user, nobody])
    finally:
        await conn.close()
    assert state.completions == {user: {"verify-email"}} and state.completion_points == {user: 10}
    assert state.scores == {user: (10, False)} and state.adjustments == {}
    assert state.naming == {user} and state.ranked == {user}
