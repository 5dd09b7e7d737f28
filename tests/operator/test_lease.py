"""The Lease that makes one operator instance active, against kmock's API server (with the
compare-and-swap on resourceVersion that the real API server does)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator

import pytest_asyncio
from kmock import Server
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from leaderboard.operator.kube.lease import LeaseLock
from tests.operator.kubemock import Emulator
from tests.support import eventually


@pytest_asyncio.fixture
async def client() -> AsyncIterator[AsyncClient]:
    async with Emulator() as k8s, Server(k8s) as server:
        with warnings.catch_warnings():  # kmock 0.8 reads it with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            k8s.resources.load_bundled()
        url = str(server.url).rstrip("/")
        c = AsyncClient(KubeConfig.from_one(cluster=Cluster(server=url), user=User()))
        try:
            yield c
        finally:
            await c.close()


def lock(client: AsyncClient, identity: str, duration_s: int = 15) -> LeaseLock:
    return LeaseLock(
        client, namespace="ns", name="pg-operator", identity=identity, duration_s=duration_s,
        margin_s=0.5,
    )  # fmt: skip


async def test_one_holder_at_a_time_and_release_hands_over(client: AsyncClient) -> None:
    a, b = lock(client, "a"), lock(client, "b")
    assert await a.hold()
    assert not await b.hold()
    assert await a.hold()  # renewing
    await a.release()
    assert not a.held
    assert await b.hold()
    assert not await a.hold()


async def test_of_two_racing_instances_exactly_one_wins(client: AsyncClient) -> None:
    await lock(client, "seed", duration_s=1).hold()  # an expired holder to take over from
    await eventually(lambda: _not(lock(client, "probe", duration_s=1)), timeout=5)
    contenders = [lock(client, f"c{i}") for i in range(8)]
    won = await asyncio.gather(*(c.hold() for c in contenders))
    assert sum(won) == 1


async def test_a_holder_that_stops_renewing_is_replaced_after_the_lease_runs_out(
    client: AsyncClient,
) -> None:
    a, b = lock(client, "a", duration_s=1), lock(client, "b", duration_s=1)
    assert await a.hold()
    assert not await b.hold()
    await eventually(b.hold, timeout=5)  # a crashed: no renewals, no release
    assert not a.held  # a would have stopped acting before b started (margin)


async def _not(contender: LeaseLock) -> bool:
    """True once the seed's lease has expired (the probe could take it); gives it back."""
    if await contender.hold():
        await contender.release()
        return True
    return False
