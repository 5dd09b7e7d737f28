"""The failover decision: observed cluster state in, one action and its reason out.

No I/O here (like websockets' protocol core): the local shell (:mod:`.local`) and the
Kubernetes shell feed it what their probes saw and carry out what it returns. Each call
returns exactly one :class:`Decision` whose ``reason`` is the sentence logged and recorded as
an event, so a person on call can read the operator's mind line by line.

Zero loss with quorum replication (``ANY 1 (*)``): a commit was acknowledged once *one*
standby flushed it, so the standby holding the newest acknowledged write is the one with the
highest received LSN *among all the standbys that were synchronous candidates*. With
``durability=required`` we therefore promote only when every such candidate answered (one of
them missing might be the one with the newest write) and pick the highest LSN.
"""

from __future__ import annotations

from leaderboard.operator.planned import leave_terminating_primary, rollout, scale
from leaderboard.operator.state import Action, Cluster, Decision, Durability, Member

__all__ = [
    "Action", "Cluster", "Decision", "Durability", "Member", "decide", "remember_candidates",
]  # fmt: skip


def remember_candidates(
    known: frozenset[str], seen: frozenset[str], members: frozenset[str]
) -> frozenset[str]:
    """The synchronous candidates after a probe of the primary: those it reports streaming as
    sync or quorum now, plus every one seen before, while they are members.

    Never fewer on the primary's word alone: a probe that lands on a primary whose postmaster
    was just killed runs in a backend that outlives it for a moment and finds its walsenders
    already gone. Taking that empty answer as the truth left no candidate, so no failover,
    ever (the drills' "no promotion within 60 s"). Keeping a standby that stopped streaming
    is safe: it holds every write acknowledged while it was synchronous, and decide() waits
    for every candidate and promotes the one with the highest LSN. The set starts afresh at
    each promotion or switchover.

    The price, with three or more members: a candidate that died before the primary holds
    up the failover until it answers again. Dropping it sooner would need each standby's
    flush LSN against the last write it could have acknowledged (a lagging quorum standby
    may not have it yet); the probes do not read those today."""
    return (known | seen) & members


def decide(cluster: Cluster) -> Decision:
    primary = cluster.member(cluster.primary)
    if primary is None:
        raise ValueError(f"unknown primary {cluster.primary!r}")
    if cluster.paused:
        seen = (
            f"{primary.name} answers as {primary.role}"
            if primary.reachable
            else f"{primary.name} missed {primary.failed_probes} probes"
        )
        return Decision(Action.NONE, f"paused, observing only: {seen}")

    # Another member accepting writes is a split brain in the making: fence it first.
    rogue = [
        m for m in cluster.members if m.name != primary.name and m.reachable and m.role == "primary"
    ]
    if rogue and (primary.reachable and primary.role == "primary"):
        return Decision(
            Action.FENCE,
            f"{rogue[0].name} accepts writes but {primary.name} is the primary; stopping it",
            target=rogue[0].name,
        )

    if primary.reachable and primary.role == "primary":
        return _healthy(cluster, primary)

    if primary.reachable and primary.role == "replica":
        others = [m.name for m in cluster.members if m.reachable and m.role == "primary"]
        if others:
            return Decision(
                Action.NONE,
                f"{primary.name} is in recovery while {others[0]} accepts writes; "
                "not acting on a state no decision of ours produced",
            )
        # A restarted member never promotes itself (pg-member.sh starts it as a standby): the
        # member that was primary holds every acknowledged write, so it is the one to promote.
        return Decision(
            Action.PROMOTE,
            f"{primary.name} was the primary and came back in recovery with no primary around; "
            "promoting it back (it holds every acknowledged write)",
            target=primary.name,
        )

    if (
        primary.failed_probes < cluster.failure_threshold
        and primary.running
        and not primary.terminating
    ):
        return Decision(
            Action.NONE,
            f"{primary.name} missed {primary.failed_probes} of {cluster.failure_threshold} "
            "probes; not failing over yet",
        )
    return _failover(cluster, primary)


def _healthy(cluster: Cluster, primary: Member) -> Decision:
    replicas = [m for m in cluster.members if m.name != primary.name]
    if primary.terminating:
        return leave_terminating_primary(cluster, primary, replicas)
    if cluster.switchover_to and cluster.switchover_to != primary.name:
        target = cluster.member(cluster.switchover_to)
        if target is None or not (target.reachable and target.role == "replica"):
            return Decision(
                Action.NONE, f"switchover to {cluster.switchover_to} waits: it is not a replica"
            )
        if target.upstream != primary.name or target.name not in cluster.sync_candidates:
            return Decision(
                Action.NONE,
                f"switchover to {target.name} waits until it streams synchronously",
            )
        return Decision(
            Action.SWITCHOVER,
            f"planned switchover from {primary.name} to {target.name}",
            target=target.name,
            old_primary=primary.name,
        )
    if (cut_off := _cut_from_its_standbys(cluster, primary, replicas)) is not None:
        return cut_off
    for replica in replicas:
        if replica.terminating and not replica.reachable:
            return Decision(
                Action.NONE,
                f"{replica.name}'s pod is terminating; its StatefulSet brings it back "
                f"as a replica of {primary.name}",
            )
        if not replica.reachable and not replica.running:
            return Decision(
                Action.REJOIN,
                f"{replica.name} is down; rejoining it as a replica of {primary.name}",
                target=replica.name,
            )
        if not replica.reachable and replica.failed_probes >= cluster.failure_threshold:
            return Decision(
                Action.FENCE,
                f"{replica.name} runs but has not answered {replica.failed_probes} probes; "
                "stopping it so it can rejoin",
                target=replica.name,
            )
        if replica.role == "replica" and replica.stalled_probes >= cluster.stall_threshold:
            if _may_be_cut(cluster, replicas):
                # The standbys' walreceivers time out within a moment of each other, which
                # can fall on two sides of a probe: rejoining the first one then reset its
                # count, and a primary cut off from them was never replaced.
                return Decision(
                    Action.NONE,
                    f"none of the {len(replicas)} standbys streams from {primary.name}; waiting "
                    f"until each has stalled for {cluster.stall_threshold} probes (a primary "
                    "cut off from them is replaced, a single stalled standby rejoined)",
                )
            return Decision(
                Action.REJOIN,
                f"{replica.name} answers but has not streamed for {replica.stalled_probes} "
                f"probes; rejoining it to {primary.name} (pg_rewind)",
                target=replica.name,
            )
        if replica.role == "replica" and replica.upstream not in (None, primary.name):
            return Decision(
                Action.REPOINT,
                f"{replica.name} follows {replica.upstream}; pointing it at {primary.name}",
                target=replica.name,
            )
    streaming = [r for r in replicas if r.role == "replica" and r.upstream == primary.name]
    if not primary.sync_standbys_enabled and streaming:
        return Decision(
            Action.ENABLE_SYNC,
            f"{', '.join(r.name for r in streaming)} streams from {primary.name}; "
            "requiring a synchronous standby again",
            target=primary.name,
        )
    if (scaled := scale(cluster, primary, replicas)) is not None:
        return scaled
    if cluster.outdated:
        return rollout(cluster, primary, replicas)
    return Decision(
        Action.NONE,
        f"{primary.name} is the primary; {len(streaming)} of {len(replicas)} replicas streaming",
    )


def _cut_from_its_standbys(
    cluster: Cluster, primary: Member, replicas: list[Member]
) -> Decision | None:
    """A primary that answers us while *every* standby (two or more) answers us too but
    none has streamed from it for ``stall_threshold`` probes, and it reports no synchronous
    standby: its own links are the common fault (a partition between it and the rest).
    Under ``durability: required`` it cannot acknowledge a write until they are back, so
    writes would wait for the partition to heal; the standbys hold every acknowledged write
    (the one with the highest LSN, as in any failover), so promoting it is as safe as a
    failover and ends the wait. With one standby we cannot tell whose link failed (rejoining
    it, below, is the answer there)."""
    if not _may_be_cut(cluster, replicas) or not all(
        r.stalled_probes >= cluster.stall_threshold for r in replicas
    ):
        return None
    best = max(
        (r for r in replicas if r.name in cluster.sync_candidates),
        key=lambda m: (m.lsn, m.name == cluster.switchover_to, m.name),
    )
    return Decision(
        Action.PROMOTE,
        f"{primary.name} answers, but none of its {len(replicas)} standbys has streamed from "
        f"it for {cluster.stall_threshold} probes while each answers us: it is cut off from "
        f"them; promoting {best.name} (received LSN {best.lsn:X}, the highest)",
        target=best.name,
        old_primary=primary.name,
    )


def _failover(cluster: Cluster, primary: Member) -> Decision:
    # A process (or pod) that is gone is not a slow probe: no need to wait for more misses.
    down = (
        f"{primary.name} is not running (its process or pod is gone)"
        if not primary.running
        else f"{primary.name} stopped answering while its pod terminates"
        if primary.terminating
        else f"{primary.name} failed {primary.failed_probes} probes in a row"
    )
    replicas = [m for m in cluster.members if m.name != primary.name]
    healthy = [m for m in replicas if m.reachable and m.role == "replica"]
    if cluster.durability == "required":
        missing = sorted(n for n in cluster.sync_candidates if not _reachable(cluster.member(n)))
        refused = ""
        if not cluster.sync_candidates:
            refused = (
                "no replica was synchronous: promoting one could lose acknowledged writes "
                "(durability: required)"
            )
        elif missing:
            refused = (
                f"synchronous candidate(s) {', '.join(missing)} do not answer and may hold the "
                "newest acknowledged write (durability: required)"
            )
        candidates = [] if refused else [m for m in healthy if m.name in cluster.sync_candidates]
    else:
        refused, candidates = "", healthy
    if not candidates:
        refused = refused or "no healthy replica can take over"
        if not primary.running:
            # No replica may take over, and the primary's process is gone, not hung: it
            # holds every write it acknowledged, so it is started again where it is, as a
            # standby (as a Kubernetes pod restarts), and promoted back by the rule in
            # decide(). Waiting instead kept writes down for good when a primary died seconds
            # after its promotion, before a probe saw a standby synchronous (chaos seed 23).
            return Decision(
                Action.RESTART,
                f"{down}, and {refused}; starting {primary.name} again in place (it holds "
                "every acknowledged write; it comes back as a standby and is promoted back)",
                target=primary.name,
            )
        return Decision(Action.NONE, f"{down}, but {refused}")
    best = max(candidates, key=lambda m: (m.lsn, m.name == cluster.switchover_to, m.name))
    notes: tuple[str, ...] = ()
    if best.name not in cluster.sync_candidates:
        notes = (f"{best.name} was not synchronous: writes it had not received are lost",)
    return Decision(
        Action.PROMOTE,
        f"{down}; promoting {best.name} (received LSN {best.lsn:X}, the highest)",
        target=best.name,
        old_primary=primary.name,
        notes=notes,
    )


def _may_be_cut(cluster: Cluster, replicas: list[Member]) -> bool:
    """Two or more standbys, all answering us and none streaming, and a primary that reports
    no synchronous standby: the primary may be cut off from them (once all have stalled for
    ``stall_threshold`` probes, :func:`_cut_from_its_standbys` says so)."""
    return (
        len(replicas) >= 2
        and not cluster.sync_streaming
        and bool(cluster.sync_candidates)
        and cluster.sync_candidates <= {r.name for r in replicas}
        and all(r.reachable and r.role == "replica" and r.stalled_probes > 0 for r in replicas)
    )


def _reachable(member: Member | None) -> bool:
    return member is not None and member.reachable and member.role == "replica"
