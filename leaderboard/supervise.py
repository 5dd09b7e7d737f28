"""Background tasks that never die in silence.

A service's loops (the ranking repair, the reconciliation, the season clock, the
broadcaster's feed and heartbeat) run beside the requests. A bare ``asyncio.create_task``
that raises keeps its exception until someone awaits the task, which nobody does until
shutdown: the loop is gone, the process looks healthy. Here a task that dies of an unexpected
error is logged with its trace, counted, and started again after a pause; a loop that returns
is started again too (it is meant to run for ever). Only cancellation ends one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

log = logging.getLogger("leaderboard.supervise")

RESTARTS = Counter(
    "leaderboard_background_task_restarts_total",
    "Background tasks that died (or returned) and were started again",
    ["task"],
)


async def _supervise(
    name: str, run: Callable[[], Awaitable[object]], *, forever: bool, pause_s: float
) -> None:
    while True:
        try:
            await run()
            if not forever:
                return
            log.error("background task %s returned; starting it again", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s died; starting it again in %.1f s", name, pause_s)
        RESTARTS.labels(name).inc()
        await sleep(pause_s)


async def sleep(seconds: float) -> None:
    """``asyncio.sleep`` for a loop that runs until cancelled: a cancellation that something
    swallowed is raised here instead of being lost. Python 3.11's ``asyncio.wait_for`` (under
    asyncpg's ``acquire``) drops one that lands just as its inner call completes: the task
    stays "cancelling" while its loop sleeps on, and whoever awaits it (a shutdown) waits for
    ever (a test API's teardown hung so in a full run)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(seconds)


def start(
    name: str,
    run: Callable[[], Awaitable[object]],
    *,
    forever: bool = True,
    pause_s: float = 1.0,
) -> asyncio.Task[None]:
    """Run ``run()`` in the background, again whenever it dies. ``forever=False``: a task
    that is done once it returns (it is still run again if it dies)."""
    RESTARTS.labels(name)  # at 0 from the start
    return asyncio.create_task(_supervise(name, run, forever=forever, pause_s=pause_s), name=name)
