"""Node loss as Kubernetes users meet it, on kmock: the node that runs the primary's pod and
the active operator replica dies with everything on it. The primary's postgres is gone, its
pod object stays (the node is marked NotReady only after its grace period, and the volume is
not released for minutes, so no replacement starts), and the active operator can reach
neither the API server nor the members. With the chart's defaults (three members, two
operator replicas): the standing-by operator takes the Lease when it runs out, fails over to
a synchronous standby, and writes through the -rw Service come back; none acknowledged is
lost. The write downtime is printed (docs/operator.md keeps the figure)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from urllib.parse import urlsplit

import asyncpg
import pytest
from lightkube.resources.core_v1 import Pod

from leaderboard.operator import kube
from tests.operator.netproxy import Proxy
from tests.operator.test_kube import World, until
from tests.operator.test_kube_partition import replicas_through, rw_service, world3

__all__ = ["world3"]  # the fixture
from tests.support import eventually, free_ports

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


async def test_a_lost_node_with_the_primary_and_the_active_operator(world3: World) -> None:
    world = world3
    api = urlsplit(world.url)
    node_down = False
    dead = free_ports(1)[0]

    def node1_address(pod: Pod) -> tuple[str, int] | None:  # operator-a lives on node 1
        return ("127.0.0.1", dead) if node_down else kube.pod_address(pod)

    async with (
        Proxy(lambda: (api.hostname or "127.0.0.1", api.port or 80)) as node1_api,
        rw_service(world) as rw,
    ):
        a = world.start("operator-a", address=node1_address, url=node1_api.url)
        await until(world, lambda: world.status.get("leader") == "operator-a", timeout=30,
                    what="operator-a to lead")  # fmt: skip
        b = world.start("operator-b")
        await until(
            world,
            lambda: (
                world.status.get("phase") == "Healthy"
                and sorted(world.status.get("syncStandbys") or []) == ["member1", "member2"]
            ),
            timeout=30,
            what="a healthy cluster with two synchronous candidates",
        )
        await replicas_through(world, rw)  # as pg-member.sh does: through the Service
        password = world.stack.superuser_password
        setup = await world.member("member0").connect(password)
        await setup.execute("CREATE TABLE nodeloss (id bigint PRIMARY KEY)")
        await setup.close()

        acked: list[tuple[int, float]] = []
        last_error: list[str] = []  # the writer's, for the failure message
        stop = asyncio.Event()

        async def write() -> None:  # an API pod on a surviving node, through the Service
            conn: asyncpg.Connection | None = None
            for i in itertools.count():
                if stop.is_set():
                    break
                try:
                    if conn is None:
                        conn = await asyncpg.connect(
                            host="127.0.0.1", port=rw.port, user="postgres",
                            password=password, database="postgres", timeout=1,
                        )  # fmt: skip
                    await conn.execute("INSERT INTO nodeloss VALUES ($1)", i, timeout=1.0)
                    acked.append((i, time.monotonic()))
                except (
                    OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                ) as exc:  # fmt: skip
                    last_error[:] = [repr(exc)]
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    await asyncio.sleep(0.05)
            if conn is not None:
                conn.terminate()

        writer = asyncio.create_task(write())

        async def acknowledged(after: float = 0.0, count: int = 50) -> bool:
            return sum(at > after for _, at in acked) > count

        await eventually(acknowledged, timeout=10)

        lost_at = time.monotonic()
        node_down = True  # node 1 dies: operator-a is cut off from everything...
        node1_api.sever()
        world.member("member0").kill()  # ...and the primary's postgres is gone with it
        await until(
            world,
            lambda: (
                world.status.get("currentPrimary") in ("member1", "member2")
                and world.status.get("leader") == "operator-b"
            ),
            timeout=60,
            what="operator-b to take over and fail over",
        )
        promoted_at = time.monotonic()
        try:
            await eventually(lambda: acknowledged(promoted_at, 19), timeout=30)
        except AssertionError:
            raise AssertionError(
                f"writes did not resume within 30 s of the promotion; last write error: "
                f"{last_error}; status: {world.status}"
            ) from None
        stop.set()
        await asyncio.wait_for(writer, 10)

        times = [at for _, at in acked]
        downtime = max(b - a for a, b in itertools.pairwise(times) if b > lost_at)
        print(f"node loss: write downtime {downtime:.1f} s (the longest gap between two "
              f"acknowledged writes), {len(acked)} acknowledged")  # fmt: skip
        survivor = await world.member(world.status["currentPrimary"]).connect(password)
        try:
            rows = await survivor.fetch("SELECT id FROM nodeloss")
        finally:
            await survivor.close()
        lost = {i for i, _ in acked} - {r["id"] for r in rows}
        assert lost == set(), f"acknowledged and lost: {sorted(lost)[:20]}"
        assert downtime < 45  # the figure is printed; this only catches a hang
        node1_api.heal()  # so operator-a can stop (it no longer holds the Lease)
        with contextlib.suppress(AssertionError):
            await world.stop(a)
        await world.stop(b)
