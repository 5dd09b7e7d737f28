"""The partition drill on the local shell: each shape on three members in network
namespaces, under writers through the API, WebSocket viewers and a client writing straight
to the primary; the history check must pass (0 lost, 0 split-brain acknowledgements) and
each shape must end the way the design says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from leaderboard_tools.chaos import campaign
from leaderboard_tools.chaos.faults import partition
from leaderboard_tools.chaos.network import Network
from leaderboard_tools.chaos.world import World, world_settings
from tests.support import test_settings

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest_asyncio.fixture
async def world(run_dir: Path) -> AsyncIterator[World]:
    settings = world_settings(test_settings(run_dir, members=3), members=3)
    built = World(settings, Network("ct"))
    try:
        yield await built.start()
    finally:
        built.stop()


def _decisions(world: World, since: float) -> str:
    """What the operator decided from a little before ``since`` on: a promotion that did not
    happen says why (the standbys' cut once went 16 s without one in a full run)."""
    return "\n".join(
        f"{e['ts'] - since:+.1f} s {e['action']} {e['target']}: {e['reason']}"
        for e in world.events(since - 5)
    )


async def _drill(world: World, shape: str) -> campaign.Run:
    plan = campaign.Plan(0.0, faults=[partition(shape).name], hold_s=(6.0, 6.0), viewers=5)
    result = await campaign.run(world, plan)
    assert result.check is not None
    assert result.check.violations == [], result.report()["faults"]
    assert result.check.lost == result.check.split_brain == 0
    assert result.check.direct_acknowledged > 0  # the direct client did write
    return result


async def test_a_primary_cut_from_everyone_is_replaced_within_seconds(world: World) -> None:
    (fault,) = (await _drill(world, "primary")).records
    assert fault.victim == "member0"
    assert fault.promoted in ("member1", "member2")
    assert fault.downtime_s is not None and fault.downtime_s < 10  # the bar
    assert world.recorded_primary() == fault.promoted


async def test_a_primary_cut_from_the_operator_only_is_fenced_and_replaced(world: World) -> None:
    """Its clients and standbys still reach it: only the kill (the operator's fence, which
    goes through the kernel, not the network) keeps it from acknowledging writes after the
    promotion; the direct client, connected to it throughout, proves it did not."""
    result = await _drill(world, "operator-primary")
    (fault,) = result.records
    assert fault.promoted in ("member1", "member2"), _decisions(world, fault.injected)
    assert result.check is not None and result.check.direct_split_brain == 0


async def test_a_primary_cut_from_its_standbys_is_replaced_once_they_stall(world: World) -> None:
    """durability: required: its commits wait for a standby, so nothing is acknowledged that
    a standby lacks. The operator reaches it and both standbys; once neither has streamed for
    the stall threshold it is cut off from them, and the standby with the highest LSN is
    promoted instead of writes waiting for the cut to heal."""
    plan = campaign.Plan(0.0, faults=[partition("primary-standbys").name], hold_s=(16.0, 16.0),
                         viewers=5)  # fmt: skip
    result = await campaign.run(world, plan)
    assert result.check is not None and result.check.violations == []
    (fault,) = result.records
    assert fault.promoted in ("member1", "member2"), _decisions(world, fault.injected)
    assert fault.downtime_s is not None and fault.downtime_s < 14  # not the cut's 16 s
