"""Background tasks never die in silence: logged with their trace, counted, started again;
only cancellation ends them."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from leaderboard import supervise
from tests.support import eventually


def _restarts(name: str) -> float:
    value = REGISTRY.get_sample_value("leaderboard_background_task_restarts_total", {"task": name})
    return value or 0.0


async def test_a_task_that_dies_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        await asyncio.Event().wait()  # the third run lives

    with caplog.at_level(logging.ERROR, logger="leaderboard.supervise"):
        task = supervise.start("test-flaky", flaky, pause_s=0.01)

        async def third_run() -> bool:
            return runs == 3

        await eventually(third_run, timeout=5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    died = [r for r in caplog.records if "test-flaky died" in r.getMessage()]
    assert len(died) == 2 and all(r.exc_info for r in died)  # with the trace
    assert _restarts("test-flaky") == 2


async def test_a_loop_that_returns_is_started_again_and_a_one_shot_task_is_not() -> None:
    loops = 0

    async def returns() -> None:
        nonlocal loops
        loops += 1

    task = supervise.start("test-returns", returns, pause_s=0.01)

    async def twice() -> bool:
        return loops >= 2

    await eventually(twice, timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    once = 0

    async def one_shot() -> None:
        nonlocal once
        once += 1

    await asyncio.wait_for(supervise.start("test-once", one_shot, forever=False), 5)
    assert once == 1 and _restarts("test-once") == 0


async def test_the_services_run_their_loops_supervised() -> None:
    """The API's and the broadcaster's background loops go through supervise.start."""
    from tests.support import REPO

    for path in ("leaderboard/service.py", "leaderboard/broadcaster/server.py"):
        text = (REPO / path).read_text()
        assert "asyncio.create_task(" not in text, path
        assert "supervise.start(" in text, path


async def test_a_cancellation_a_library_swallowed_still_ends_the_loop() -> None:
    """As 3.11's wait_for under asyncpg's acquire can: the CancelledError is caught and the
    round returns normally. The loop's next sleep raises it, so a shutdown awaiting the task
    ends instead of waiting for ever."""
    rounds = 0
    inside = asyncio.Event()

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                inside.set()
                await asyncio.sleep(10)  # a query, cancelled mid-way
            except asyncio.CancelledError:
                pass  # swallowed
            await supervise.sleep(0.01)

    task = supervise.start("test-swallowed", loop)
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == 1


async def test_the_service_loops_sleep_through_supervise() -> None:
    """A loop that sleeps with asyncio.sleep would sleep through a swallowed cancellation."""
    from tests.support import REPO

    for path in (
        "leaderboard/reconcile.py",
        "leaderboard/repair.py",
        "leaderboard/seasonclock.py",
        "leaderboard/cache/pipe.py",
        "leaderboard/broadcaster/feed.py",
        "leaderboard/broadcaster/hub.py",
    ):
        text = (REPO / path).read_text()
        assert "supervise.sleep(" in text and "await asyncio.sleep(" not in text, path
