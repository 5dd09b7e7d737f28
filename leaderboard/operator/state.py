"""What the failover decision reads and returns (:mod:`.decide`): the members as the probes
saw them, the cluster around them, and one action with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Durability = Literal["required", "preferred"]


class Action(StrEnum):
    NONE = "none"
    PROMOTE = "promote"
    FENCE = "fence"
    REJOIN = "rejoin"
    REPOINT = "repoint"
    ENABLE_SYNC = "enable-sync"
    SWITCHOVER = "switchover"
    RESTART = "restart"
    ROLL_REPLICA = "roll-replica"
    SCALE = "scale"


@dataclass(frozen=True)
class Member:
    """What one probe of one member saw, plus how many probes in a row failed."""

    name: str
    reachable: bool
    role: Literal["primary", "replica"] | None = None
    lsn: int = 0  # primary: current WAL LSN; replica: last received (flushed) LSN
    timeline: int = 0
    upstream: str | None = None  # replica: the member it streams from, if streaming
    failed_probes: int = 0
    running: bool = True  # its process (or pod) exists, whether or not it answers
    sync_standbys_enabled: bool = True  # primary: synchronous_standby_names is set
    stalled_probes: int = 0  # replica: probes in a row that found it answering but not streaming
    terminating: bool = False  # its pod is being deleted (a drain, an eviction, a rollout)


@dataclass(frozen=True)
class Cluster:
    members: tuple[Member, ...]
    primary: str  # the member the operator made primary (routing points at it)
    sync_candidates: frozenset[str] = frozenset()  # may hold the newest acknowledged write
    sync_streaming: frozenset[str] = frozenset()  # what the primary reports now (for metrics)
    durability: Durability = "required"
    failure_threshold: int = 3
    stall_threshold: int = 10  # a replica not streaming for this many probes is rejoined
    paused: bool = False
    switchover_to: str | None = None
    # A rollout (Kubernetes, StatefulSet ``OnDelete``): the members whose pod does not run
    # the StatefulSet's update revision, and how many pods it should have (0: unknown).
    outdated: frozenset[str] = frozenset()
    expected_members: int = 0
    instances: int = 0  # spec.instances: how many members are wanted (0: as many as there are)

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    target: str | None = None
    old_primary: str | None = None
    instances: int = 0  # Action.SCALE: the StatefulSet's replicas to set
    notes: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.action.value}{' ' + self.target if self.target else ''}: {self.reason}"
