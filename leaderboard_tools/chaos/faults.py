"""The faults a chaos drill injects into a :class:`~leaderboard_tools.chaos.world.World`, and how
each is healed.

A fault picks its victim when it lands (the primary of that moment, a standby...), is held
for a while, then healed; the drill then waits for the world to be healthy again before the
next. Healing undoes only what the fault did to the outside world (a partition lifted, a
hung process woken, a crashed service restarted as its Deployment would restart it); every
repair inside the cluster (fencing, promotion, rejoin) is the operator's job and is what the
drill measures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from leaderboard_tools.chaos.world import OPERATOR, World
from leaderboard_tools.devstack.process import signal_tree

Kind = Literal["process", "network", "redis", "api", "broadcaster"]


@dataclass(frozen=True)
class Fault:
    name: str
    kind: Kind
    # The victim is the primary and is cut off or stopped: any write acknowledged while the
    # fault holds came from another member (else it is a split-brain acknowledgement).
    isolates_primary: bool
    describe: str
    _inject: Callable[[World, str], Awaitable[None]]
    _heal: Callable[[World, str], Awaitable[None]]
    victim_is_primary: bool = True

    def victim(self, world: World, roles: dict[str, str]) -> str:
        primary = world.recorded_primary()
        if self.victim_is_primary:
            return primary
        if self.kind in ("redis", "api", "broadcaster"):
            return self.kind
        replicas = sorted(n for n, r in roles.items() if r == "replica")
        return replicas[0] if replicas else primary

    async def inject(self, world: World, victim: str) -> None:
        await self._inject(world, victim)

    async def heal(self, world: World, victim: str) -> None:
        await self._heal(world, victim)


async def _nothing(world: World, victim: str) -> None:
    """The operator repairs what is left (a killed member is rejoined)."""


def _kill(pid: int | None, child: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL ``pid`` (a crash: a postmaster's backends notice and exit by themselves), and
    reap it if it is the drill's own child."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if child is not None and child.pid == pid:
        child.wait()


async def _kill_member(world: World, victim: str) -> None:
    member = world.member(victim)
    _kill(member.pid(), member.process)


async def _hang_member(world: World, victim: str) -> None:
    if (pid := world.member(victim).pid()) is not None:
        signal_tree(pid, signal.SIGSTOP)


async def _wake_member(world: World, victim: str) -> None:
    if (pid := world.member(victim).pid()) is not None:
        signal_tree(pid, signal.SIGCONT)


def _others(world: World, victim: str) -> list[str]:
    return [m.name for m in world.cluster.members if m.name != victim]


async def _cut_all(world: World, victim: str) -> None:
    world.network.partition(victim)


async def _cut_operator(world: World, victim: str) -> None:
    world.network.partition(victim, [OPERATOR])


async def _cut_standbys(world: World, victim: str) -> None:
    world.network.partition(victim, _others(world, victim))


async def _lossy(world: World, victim: str) -> None:
    world.network.degrade(victim, loss_pct=30)


async def _heal_network(world: World, victim: str) -> None:
    world.network.heal(victim)


async def _kill_redis(world: World, victim: str) -> None:
    redis = world.cluster.redis
    _kill(redis.pid(), redis.process)


async def _start_redis(world: World, victim: str) -> None:
    world.cluster.redis.start()  # empty: the API rebuilds the ranking from PostgreSQL


async def _kill_component(world: World, victim: str) -> None:
    component = world.component(victim)
    _kill(component.pid(), component.process)


async def _start_component(world: World, victim: str) -> None:
    world.component(victim).start()


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("kill-primary", "process", True, "SIGKILL the primary's postmaster",
              _kill_member, _nothing),
        Fault("hang-primary", "process", True, "SIGSTOP the primary (every backend)",
              _hang_member, _wake_member),
        Fault("kill-standby", "process", False, "SIGKILL a standby's postmaster",
              _kill_member, _nothing, victim_is_primary=False),
        Fault("partition-primary", "network", True,
              "the primary's host cut from every other host and the machine",
              _cut_all, _heal_network),
        Fault("partition-operator-primary", "network", False,
              "the operator cut from the primary; the primary still reaches its standbys "
              "and its clients", _cut_operator, _heal_network),
        Fault("partition-primary-standbys", "network", False,
              "the primary cut from its standbys; the operator and the clients still reach "
              "it", _cut_standbys, _heal_network),
        Fault("loss-primary", "network", False, "30% of the primary's packets dropped",
              _lossy, _heal_network),
        Fault("kill-redis", "redis", False, "SIGKILL Redis (restarted empty)",
              _kill_redis, _start_redis, victim_is_primary=False),
        Fault("kill-api", "api", False, "SIGKILL the API (restarted)",
              _kill_component, _start_component, victim_is_primary=False),
        Fault("kill-broadcaster", "broadcaster", False, "SIGKILL the broadcaster (restarted)",
              _kill_component, _start_component, victim_is_primary=False),
    ]
}  # fmt: skip


def partition(shape: str) -> Fault:
    """The fault of ``leaderboard drill partition --shape SHAPE``."""
    return FAULTS[f"partition-{shape}"]
