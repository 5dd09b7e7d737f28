"""The local operator's loop, on the shared cluster (healthy, so it decides nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from leaderboard.operator.decide import Cluster
from leaderboard_tools.devstack.postgres import Member as PgMember
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.local import LocalOperator
from tests.conftest import own_cluster
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

        async def went_on() -> bool:  # the 4th round began: the 3rd has recorded its decision
            return rounds >= 4

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
    actions = [e["action"] for e in events if e["action"] != "candidates"]
    assert actions[:4] == ["start", "error", "error", "none"], events
    assert "a bug in one round" in events[1]["reason"]
    assert "stray CancelledError" in events[2]["reason"]


async def test_a_promotion_whose_last_step_fails_is_carried_on_from_the_new_primary() -> None:
    """pg_promote succeeded, then the next step failed (a connection reset): the member is the
    primary now, so the next rounds must build on it (rejoin the old one), not wait for the
    dead primary, whose only synchronous candidate no longer answers as a replica."""
    async with own_cluster("lb-promote-") as cluster, LocalOperator(cluster, "member0") as operator:
        set_sync = operator._set_sync
        failed = False

        async def fails_once(member: PgMember, value: str) -> None:
            nonlocal failed
            if not failed:
                failed = True
                raise OSError("connection reset (injected)")
            await set_sync(member, value)

        operator._set_sync = fails_once  # type: ignore[method-assign]
        await operator.round()  # healthy: member1 is seen as the synchronous candidate
        assert operator.observed.sync_candidates == {"member1"}
        cluster.members[0].kill()
        password = cluster.superuser_password

        async def recovered() -> bool:
            await operator.round()
            roles = [await m.probe_role(password) for m in cluster.members]
            return roles == ["replica", "primary"]

        await eventually(recovered, timeout=60, interval=0.2)
        assert failed and operator.primary == "member1"
        conn = await cluster.members[1].connect(password)
        try:  # writes commit: the rejoined member streams as the synchronous standby again
            await conn.execute("SET statement_timeout = '10s'; CREATE TABLE carried_on (id int)")
        finally:
            await conn.close()
        actions = [json.loads(e)["action"] for e in operator.events_path.read_text().splitlines()]
        assert actions.count("promoted") == 1 and "rejoined" in actions


async def test_a_primary_gone_before_any_standby_was_seen_synchronous_restarts_in_place() -> None:
    """Chaos seed 23: a primary died seconds after its promotion, before a probe saw any
    standby synchronous. Promoting a standby could lose what it acknowledged (one may have
    turned synchronous between two probes) and waiting kept writes down for good: it is
    started again on its own data and promoted back, with every acknowledged write."""
    async with own_cluster("lb-restart-") as cluster, LocalOperator(cluster, "member0") as operator:
        password = cluster.superuser_password
        primary = cluster.members[0]
        conn = await primary.connect(password)
        try:  # acknowledged: member1 flushed it (synchronous)
            await conn.execute(
                "CREATE TABLE acknowledged (id int); INSERT INTO acknowledged VALUES (1)"
            )
        finally:
            await conn.close()
        operator.observed.promoted()  # as just after a promotion: no candidate seen yet
        primary.kill()

        async def back() -> bool:
            await operator.round()
            roles = [await m.probe_role(password) for m in cluster.members]
            return roles == ["primary", "replica"]

        await eventually(back, timeout=60, interval=0.2)
        assert operator.primary == "member0"
        events = [json.loads(e) for e in operator.events_path.read_text().splitlines()]
        actions = [e["action"] for e in events]
        assert "restarted" in actions, actions
        assert [e["target"] for e in events if e["action"] == "promoted"] == ["member0"]
        conn = await primary.connect(password)
        try:  # every acknowledged write, and writes commit (member1 is synchronous again)
            assert await conn.fetchval("SELECT count(*) FROM acknowledged") == 1
            await conn.execute("SET statement_timeout = '10s'; INSERT INTO acknowledged VALUES (2)")
        finally:
            await conn.close()
