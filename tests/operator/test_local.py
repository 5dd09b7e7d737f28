"""The local operator's loop, on the shared cluster (healthy, so it decides nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from leaderboard.devstack.stack import Stack
from leaderboard.operator.decide import Cluster
from leaderboard.operator.local import LocalOperator
from tests.support import eventually


async def test_a_round_that_fails_unexpectedly_does_not_end_the_operator(stack: Stack) -> None:
    operator = LocalOperator(stack, "member0", interval_s=0.05)
    observe = operator.observe
    rounds = 0

    async def flaky() -> Cluster:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a bug in one round")
        if rounds == 2:  # leaked by a timeout: nobody cancelled the operator's task
            raise asyncio.CancelledError
        return await observe()

    operator.observe = flaky  # type: ignore[method-assign]
    existed = operator.events_path.exists()
    seen = len(operator.events_path.read_text().splitlines()) if existed else 0
    task = asyncio.create_task(operator.run())
    try:

        async def went_on() -> bool:
            return rounds >= 3

        await eventually(went_on, timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()  # a real cancellation still ends it
    try:
        events = [json.loads(e) for e in operator.events_path.read_text().splitlines()[seen:]]
    finally:
        if not existed:
            operator.events_path.unlink()
    actions = [e["action"] for e in events]
    assert actions[:4] == ["start", "error", "error", "none"], events
    assert "a bug in one round" in events[1]["reason"]
    assert "stray CancelledError" in events[2]["reason"]
