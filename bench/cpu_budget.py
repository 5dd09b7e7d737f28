"""The API's CPU per completion, step by step: each step of the completion flow run on its own,
in this process, against the bench's real PostgreSQL and Redis, as many at a time as one API
process sees under ``make bench`` (so group commit and Redis pipelining batch as they do there).

What each step costs this process (``time.process_time``: user + system CPU) per completion,
then the whole flow without HTTP (``complete_action``), the HTTP server alone (the API's CPU
per cached top-10 read: uvicorn and the fast path with no work behind them, measured by
api_bench) and, under wrk, the real thing.
What the real thing costs beyond "flow + HTTP server" is what running thousands of requests
interleaved adds: event-loop turns, wake-ups, task switches, cache misses.

``python -m bench.cpu_budget`` runs it against the stack the environment names (the one
``leaderboard up`` started, by default), adding a few thousand users to it.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import uvloop

from leaderboard import auth
from leaderboard.api.complete import complete_action
from leaderboard.api.schemas import CompleteActionRequest
from leaderboard.api.services import Services
from leaderboard.boards import ALL_TIME
from leaderboard.catalog import load_catalog
from leaderboard.config import Settings
from leaderboard.db.awards import Completion
from leaderboard.standings import Standing

BODY = b'{"actionId":"verify-email"}'
TASK = "a task per call (in every row below)"
FLOW = "whole flow without HTTP (complete_action)"


async def _per_call(
    make: Callable[[int], Awaitable[Any]], ids: Iterator[int], n: int, concurrency: int
) -> float:
    """CPU µs per call of ``make(i)`` (``i`` from ``ids``), ``concurrency`` calls in flight."""
    await asyncio.gather(*(make(next(ids)) for _ in range(concurrency)))  # warm: scripts, plans
    started = time.process_time()
    for _ in range(n // concurrency):
        await asyncio.gather(*(make(next(ids)) for _ in range(concurrency)))
    return (time.process_time() - started) / (n // concurrency * concurrency) * 1e6


async def measure(
    settings: Settings, *, n: int = 2000, concurrency: int = 32, rounds: int = 3
) -> dict[str, float]:
    """CPU µs per completion of each step, and of the whole flow without HTTP."""
    svc = await Services.start(settings, load_catalog(settings.catalog_path))
    gc.freeze()  # as the API does after start-up
    for task in asyncio.all_tasks():  # start-up's catch-up replays recent completions
        if task.get_name() == "ranking-catch-up":
            await task
    board = svc.leaderboard
    run = f"budget{time.time_ns():x}"
    try:
        calls = rounds * (n + concurrency)  # every call of a step gets an index of its own
        tokens = [auth.mint(settings, f"{run}-{i}") for i in range(calls)]

        async def jwt(i: int) -> None:
            await svc.verifier.user_id(tokens[i])

        async def rate_limit(i: int) -> None:
            await board.rate_limit(f"{run}-rl-{i}")

        async def validate(i: int) -> None:
            CompleteActionRequest.model_validate_json(BODY)

        awarded: dict[int, Standing] = {}

        async def award(i: int) -> None:
            done = await board.awards.award(
                Completion(f"{run}-aw-{i}", "verify-email", "{}", f"{run}-{i}")
            )
            assert done.score is not None and done.reached_seq is not None
            awarded[i] = Standing(ALL_TIME, 1, done.score, done.reached_seq)

        async def ranking(i: int) -> None:  # the users just awarded, with what they reached
            await board.record(f"{run}-aw-{i}", [awarded[i]])

        async def flow(i: int) -> None:
            async def read_body(limit: int) -> bytes:
                return BODY

            reply = await complete_action(
                svc,
                authorization=f"Bearer {tokens[i]}",
                content_length=str(len(BODY)),
                request_id=None,
                read_body=read_body,
            )
            assert reply.status == 200, reply.body

        async def nothing(i: int) -> None:
            return

        steps: dict[str, Callable[[int], Awaitable[Any]]] = {
            TASK: nothing,
            "JWT (HS256)": jwt,
            "rate limit (Redis script)": rate_limit,
            "body validation": validate,
            "award transaction (group commit)": award,
            "ranking update (Redis script)": ranking,
            FLOW: flow,
        }
        # The least of a few rounds: start-up work (the catch-up, a rebuild) and the machine's
        # other tenants only ever add to a round.
        budget: dict[str, float] = {}
        ids = {name: itertools.count() for name in steps}  # the same indices step by step
        for _ in range(rounds):
            for name, step in steps.items():
                us = await _per_call(step, ids[name], n, concurrency)
                budget[name] = round(min(us, budget.get(name, us)))
        return budget
    finally:
        await svc.stop()


def render(budget: dict[str, float], http_server_us: float | None, under_load_us: float) -> str:
    """The budget as text: each step net of the task every row pays, the whole flow, the HTTP
    server, and what interleaving thousands of requests adds under load."""
    task = budget[TASK]
    lines = ["API CPU per completion, step by step (µs; each alone, 32 in flight, uvloop):"]
    lines.append(f"  {TASK:<46} {task:>5.0f}")
    lines += [
        f"  {name:<46} {us - task:>5.0f}" for name, us in budget.items() if name not in (TASK, FLOW)
    ]
    lines.append(f"  {FLOW:<46} {budget[FLOW]:>5.0f}")
    if http_server_us is not None:
        rest = under_load_us - budget[FLOW] - http_server_us
        lines += [
            f"  {'HTTP server + fast path (cached top-10 read)':<46} {http_server_us:>5.0f}",
            f"  {'the API under wrk (64 connections)':<46} {under_load_us:>5.0f}",
            f"  {'  beyond flow + HTTP server: interleaving':<46} {rest:>5.0f}",
        ]
    return "\n".join(lines)


def run(settings: Settings) -> dict[str, float]:
    """:func:`measure` on uvloop, the API's event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(settings))


if __name__ == "__main__":
    print(orjson.dumps(run(Settings()), option=orjson.OPT_INDENT_2).decode())
