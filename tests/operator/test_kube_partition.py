"""A partition the operator cannot fence with a kill: the Kubernetes shell with three
members, where the primary's node is cut off from the operator but not from its clients nor
from its second standby, and deleting its pod does not stop the postgres behind it.

The -rw Service is emulated as kube-proxy makes it: each new connection goes to the pod that
carries the primary label at that moment, connections already open stay where they are. The
replicas stream through it (as pg-member.sh points them at the Service), and a client keeps
writing to the old primary directly. What must hold: every write it saw acknowledged is on
the new primary (none acknowledged by the old primary after the switch can be lost)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as ApiCluster
from lightkube.config.models import User
from lightkube.resources.core_v1 import Pod

from leaderboard.operator import kube
from leaderboard.operator.decide import Cluster
from leaderboard.operator.decide import Member as DecideMember
from leaderboard.operator.kube import KubeOperator
from leaderboard.operator.kube.shell import name_of
from tests.operator.netproxy import Proxy
from tests.operator.test_kube import NS, World, _world, until
from tests.support import eventually, free_ports

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest_asyncio.fixture
async def world3() -> AsyncIterator[World]:
    async with _world(members=3) as w:
        yield w


def rw_service(world: World) -> Proxy:
    """``pg-rw`` as kube-proxy routes it (see the module's docstring)."""

    def primary() -> tuple[str, int] | None:
        for member in world.stack.members:
            if world.role(member.name) == "primary":
                return "127.0.0.1", member.port
        return None  # no endpoints: refused

    return Proxy(primary)


async def _stream_through(world: World, rw: Proxy, name: str) -> None:
    """Point a replica at the -rw Service (what pg-member.sh writes in a pod)."""
    member = world.member(name)
    password = world.stack.superuser_password
    conninfo = (
        f"host=127.0.0.1 port={rw.port} user=postgres password={password} application_name={name}"
    )
    conn = await member.connect(password)
    try:
        await conn.execute(f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def replicas_through(world: World, rw: Proxy) -> None:
    """member1 and member2 stream from member0 through the -rw Service (as in the chart)."""
    for name in ("member1", "member2"):
        await _stream_through(world, rw, name)
    member0 = ("127.0.0.1", world.member("member0").port)

    async def through_the_service() -> bool:
        through = len([c for c in rw.connections if c == member0]) >= 2
        return through and await _streaming(world, "member0") == {"member1", "member2"}

    await eventually(through_the_service, timeout=30, interval=0.2)


async def _streaming(world: World, primary: str) -> set[str]:
    conn = await world.member(primary).connect(world.stack.superuser_password)
    try:
        rows = await conn.fetch(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
        )
    finally:
        await conn.close()
    return {r["application_name"] for r in rows}


async def test_a_partitioned_primary_loses_no_acknowledged_write_with_a_second_standby(
    world3: World,
) -> None:
    world = world3
    cut: set[str] = set()
    dead = free_ports(1)[0]  # nothing listens: the operator's packets go nowhere

    def address(pod: Pod) -> tuple[str, int] | None:
        return ("127.0.0.1", dead) if name_of(pod) in cut else kube.pod_address(pod)

    operator = world.start("operator-p", address=address)
    await until(world, lambda: world.status.get("phase") == "Healthy", timeout=30, what="adopt")
    assert world.status["currentPrimary"] == "member0"

    async with rw_service(world) as rw:
        await replicas_through(world, rw)
        await until(
            world,
            lambda: sorted(world.status.get("syncStandbys") or []) == ["member1", "member2"],
            timeout=30,
            what="both standbys synchronous candidates",
        )

        # A client of the old primary's node: it keeps writing to it directly.
        password = world.stack.superuser_password
        client = await world.member("member0").connect(password, timeout=5)
        await client.execute("CREATE TABLE chaos (id bigint PRIMARY KEY)")
        acked: list[tuple[int, float]] = []
        stop = asyncio.Event()

        async def write() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    await client.execute("INSERT INTO chaos VALUES ($1)", i, timeout=1.0)
                except (TimeoutError, asyncpg.PostgresError, OSError):
                    return  # commits hang once no standby confirms: nothing more is acked
                acked.append((i, time.monotonic()))

        writer = asyncio.create_task(write())

        async def some_acknowledged() -> bool:
            return len(acked) > 50

        await eventually(some_acknowledged, timeout=10)
        cut.add("member0")  # its node is cut off from the operator, nothing else
        await until(
            world,
            lambda: world.status.get("currentPrimary") in ("member1", "member2"),
            timeout=30,
            what="the failover",
        )
        promoted_at = time.monotonic()
        new_primary = world.status["currentPrimary"]
        await asyncio.sleep(2)  # the old primary's client goes on meanwhile
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(writer, 5)
        client.terminate()

        survivor = await world.member(new_primary).connect(password)
        try:
            present = {
                r["id"]
                for r in await survivor.fetch(
                    "SELECT id FROM chaos WHERE id = ANY($1::bigint[])", [i for i, _ in acked]
                )
            }
        finally:
            await survivor.close()
        lost = [i for i, _ in acked if i not in present]
        after = [i for i, at in acked if at > promoted_at]
        print(f"acknowledged {len(acked)}, lost {len(lost)}, acknowledged after the promotion "
              f"was recorded {len(after)}")  # fmt: skip
        assert lost == [], f"acknowledged by {'member0'} and lost: {lost[:20]}..."
        assert after == [], f"acknowledged by the demoted member0 after the switch: {after[:20]}"
        # The other standby now streams from the new primary, through the Service.
        others = {"member1", "member2"} - {new_primary}
        await eventually(lambda: _contains(world, new_primary, others), timeout=30)
    world.member("member0").kill()  # the partitioned node's postgres, at last
    await world.stop(operator)


async def _contains(world: World, primary: str, names: set[str]) -> bool:
    return names <= await _streaming(world, primary)


async def test_a_primary_cut_from_its_standbys_is_replaced_and_acknowledges_nothing(
    world3: World,
) -> None:
    """The other shape: the primary's clients and the operator still reach it, its standbys
    do not (their replication goes through the -rw Service, which the partition severs).
    Under `durability: required` its commits wait: nothing is acknowledged that a standby
    lacks. Once both standbys answer the operator but neither has streamed for the stall
    threshold, it is cut off from them, and a standby is promoted (the one with the highest
    LSN, as in any failover) rather than writes waiting for the partition to heal."""
    world = world3
    operator = world.start("operator-s")
    await until(world, lambda: world.status.get("phase") == "Healthy", timeout=30, what="adopt")
    async with rw_service(world) as rw:
        await replicas_through(world, rw)
        password = world.stack.superuser_password
        client = await world.member("member0").connect(password, timeout=5)
        await client.execute("CREATE TABLE cut (id bigint PRIMARY KEY)")
        await client.execute("INSERT INTO cut VALUES (0)")  # acknowledged: both streamed
        rw.sever()  # replication is cut; the client's own connection is not
        await eventually(lambda: _empty(world), timeout=15, interval=0.2)
        with pytest.raises(TimeoutError):  # committed locally, never acknowledged
            await client.execute("INSERT INTO cut VALUES (1)", timeout=2.0)
        client.terminate()
        await until(
            world,
            lambda: world.status.get("currentPrimary") in ("member1", "member2"),
            timeout=30,
            what="the promotion of a standby",
        )
        new_primary = world.status["currentPrimary"]
        assert world.status.get("failoverCount") == 1
        survivor = await world.member(new_primary).connect(password, timeout=5)
        try:  # what was acknowledged, and not what member0 committed alone
            assert [r["id"] for r in await survivor.fetch("SELECT id FROM cut")] == [0]
        finally:
            survivor.terminate()
        rw.heal()
        others = {"member1", "member2"} - {new_primary}
        await eventually(lambda: _contains(world, new_primary, others), timeout=30)
    world.member("member0").kill()  # its deleted pod's postgres, at last
    await world.stop(operator)


async def _empty(world: World) -> bool:
    return await _streaming(world, "member0") == set()


async def test_a_fully_partitioned_primary_is_replaced_and_acknowledges_nothing_after(
    world3: World,
) -> None:
    """The third shape: the primary's node is cut off from everything but a client on that
    node. The operator fails over (the probes time out), the old primary's commits find no
    standby, and every write acknowledged before the cut is on the new primary."""
    world = world3
    cut: set[str] = set()
    dead = free_ports(1)[0]

    def address(pod: Pod) -> tuple[str, int] | None:
        return ("127.0.0.1", dead) if name_of(pod) in cut else kube.pod_address(pod)

    operator = world.start("operator-f", address=address)
    await until(world, lambda: world.status.get("phase") == "Healthy", timeout=30, what="adopt")
    async with rw_service(world) as rw:
        await replicas_through(world, rw)
        password = world.stack.superuser_password
        client = await world.member("member0").connect(password, timeout=5)
        await client.execute("CREATE TABLE full_cut (id bigint PRIMARY KEY)")
        acked: list[tuple[int, float]] = []
        for i in range(50):
            await client.execute("INSERT INTO full_cut VALUES ($1)", i)
            acked.append((i, time.monotonic()))
        cut_at = time.monotonic()
        cut.add("member0")  # the operator loses it...
        rw.sever()  # ...and so do its standbys (the Service's connections are cut)
        for i in range(50, 60):  # its own client goes on
            try:
                await client.execute("INSERT INTO full_cut VALUES ($1)", i, timeout=1.0)
                acked.append((i, time.monotonic()))
            except TimeoutError:
                break
        client.terminate()
        await until(
            world,
            lambda: world.status.get("currentPrimary") in ("member1", "member2"),
            timeout=30,
            what="the failover",
        )
        rw.heal()  # the Service now leads to the new primary, never to the cut-off member0
        new_primary = world.status["currentPrimary"]
        survivor = await world.member(new_primary).connect(password)
        try:
            present = {r["id"] for r in await survivor.fetch("SELECT id FROM full_cut")}
        finally:
            await survivor.close()
        assert [i for i, at in acked if at > cut_at] == []  # no standby: nothing acknowledged
        assert {i for i, _ in acked} <= present
    world.member("member0").kill()
    await world.stop(operator)


async def test_detaching_twice_keeps_what_to_give_back(world3: World) -> None:
    """A promotion that fails after the standbys were detached is retried: the second detach
    finds `primary_conninfo` empty and must still give the first value back."""
    world = world3
    client = AsyncClient(KubeConfig.from_one(cluster=ApiCluster(server=world.url), user=User()))
    shell = KubeOperator(client, namespace=NS, name="pg", identity="operator-d")
    cluster = Cluster(
        members=tuple(
            DecideMember(m.name, reachable=True, role="replica" if m.name != "member0" else None)
            for m in world.stack.members
        ),
        primary="member0",
    )
    try:
        first = await shell._detach_standbys(cluster, "member0")
        second = await shell._detach_standbys(cluster, "member0")
        assert set(first) == {"member1", "member2"}
        assert second == first and all("application_name=" in v for v in first.values())
        assert await _streaming(world, "member0") == set()  # detached: nothing streams
        for name, conninfo in first.items():
            await shell._alter_conninfo(name, conninfo)
    finally:
        await client.close()
    await eventually(lambda: _contains(world, "member0", {"member1", "member2"}), timeout=30)
