"""``leaderboard rollout``: every member restarted, the replicas first, the primary last
through a planned switchover, as CloudNativePG and PGO roll their instances.

The operator does the restarts (it owns the members: a replica it sees down it would rejoin
itself), asked through its control file, one decision at a time as in Kubernetes; this module
holds both halves: :class:`Rolling`, the local operator's record of a rollout under way, and
:func:`run_rollout`, the command, which asks for it under the failover drill's writers and
reports what the writers saw.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from leaderboard.config import Settings
from leaderboard.operator.decide import Cluster
from leaderboard.operator.planned import in_sync
from leaderboard_tools.devstack.process import StackError
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.drill import Load, LocalTarget, wait_until_true

STREAMING_TIMEOUT_S = 60.0  # a rollout that makes no progress this long stops


class Rolling:
    """One rollout the local operator carries out: the members still to restart, fed to
    :func:`~leaderboard.operator.decide.decide` as ``outdated`` (the rule, replicas first and
    the primary last through a switchover, is the one the Kubernetes shell follows too), and
    what it restarted, in order."""

    def __init__(self, rollout: str, members: list[str]) -> None:
        self.id = rollout
        self.outdated = set(members)
        self.restarted: list[str] = []
        self.progressed = time.monotonic()

    def restarted_one(self, name: str) -> None:
        self.outdated.discard(name)
        self.restarted.append(name)
        self.progressed = time.monotonic()

    def done(self, cluster: Cluster) -> bool:
        """Every member restarted, and every replica streams synchronously again."""
        primary = cluster.member(cluster.primary)
        replicas = [m for m in cluster.members if m.name != cluster.primary]
        return (
            not self.outdated
            and primary is not None
            and all(in_sync(cluster, primary, r) for r in replicas)
        )

    def outcome(self, cluster: Cluster, waiting: str) -> tuple[str, str, dict[str, Any]] | None:
        """How it ended, if it did (recorded with its id): every member restarted and every
        replica synchronous again, or no progress for a minute (``waiting``: why)."""
        if self.done(cluster):
            restarted = ", ".join(self.restarted)
            return "rollout-done", f"restarted {restarted}", {"restarted": self.restarted}
        if time.monotonic() - self.progressed > STREAMING_TIMEOUT_S:
            return "rollout-failed", f"rollout stopped: {waiting}", {}
        return None


# -- the command


@dataclass
class RolloutResult:
    restarted: list[str]
    primary_before: str
    primary_after: str | None
    acknowledged: int
    failed_requests: int
    longest_pause_s: float
    lost: int | None
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.failed_requests == 0 and self.lost == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


async def run_rollout(stack: Stack, settings: Settings, writers: int = 8) -> RolloutResult:
    from leaderboard_tools.operator.control import write_control

    target = LocalTarget(stack)
    before, _ = await target.members()
    if before is None:
        raise StackError("no member accepts writes: start the stack with `leaderboard up`")
    rollout = uuid.uuid4().hex[:8]
    events = stack.run_dir / "operator.jsonl"
    async with Load(await target.api_url(), settings, writers) as load:
        if not await wait_until_true(lambda: len(load.acks) >= 20, 15):
            raise StackError("the API acknowledges no writes before the rollout")
        started = time.time()
        write_control(stack.run_dir, rollout=rollout)
        done = await wait_until_true(lambda: _ended(events, rollout) is not None, 300, interval=0.1)
        ended = time.time()
        await wait_until_true(lambda: any(sent > ended for _, sent, _ in load.acks), 30)
        await asyncio.sleep(0.5)  # a little steady state after it
    outcome = _ended(events, rollout) if done else {"error": "no answer from the operator"}
    assert outcome is not None
    after, _ = await target.members()
    lost = None
    if after is not None:
        found = await target.stored(after, [u for u, _, _ in load.acks])
        lost = sum(1 for u, _, _ in load.acks if u not in found)
    return RolloutResult(
        restarted=list(outcome.get("restarted", [])),
        primary_before=before,
        primary_after=after,
        acknowledged=len(load.acks),
        failed_requests=len(load.failures),
        longest_pause_s=_longest_pause(load, started, ended),
        lost=lost,
        seconds=round(ended - started, 3),
        error=outcome.get("error"),
    )


def _ended(events: Any, rollout: str) -> dict[str, Any] | None:
    """The operator's last word on this rollout: {"restarted": [...]} or {"error": ...}."""
    try:
        lines = events.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        event = json.loads(line)
        if event.get("rollout") != rollout:
            continue
        if event["action"] == "rollout-done":
            return {"restarted": event.get("restarted", [])}
        if event["action"] == "rollout-failed":
            return {"error": event["reason"]}
    return None


def _longest_pause(load: Load, start: float, end: float) -> float:
    """The longest time between two acknowledgements while the rollout ran (or between its
    start or end and the nearest acknowledgement)."""
    times = sorted(ack for _, _, ack in load.acks if start <= ack <= end)
    marks = [start, *times, end]
    return round(max(b - a for a, b in itertools.pairwise(marks)), 3)


def report(result: RolloutResult, as_json: bool) -> str:
    if as_json:
        return json.dumps(result.to_json())
    verdict = "passed" if result.passed else "FAILED"
    lines = [
        f"rollout {verdict}: restarted {', '.join(result.restarted) or 'nothing'} in "
        f"{result.seconds:.1f} s; primary {result.primary_before} -> {result.primary_after}",
        f"  {result.acknowledged} writes acknowledged, {result.failed_requests} failed, "
        f"longest pause {result.longest_pause_s:.2f} s, lost {result.lost}",
    ]
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)
