"""Planned moves of the primary, as :func:`~.decide.decide` makes them once the cluster is
healthy: a primary pod that is terminating (a drain, an eviction, a ``kubectl delete``) is
switched over before its postgres stops, and a StatefulSet update (``OnDelete``) restarts the
replicas first and the primary last. CloudNativePG and Crunchy PGO order their updates the
same way; a failover is for what nobody planned."""

from __future__ import annotations

import re

from leaderboard.operator.state import Action, Cluster, Decision, Member


def ordinal(name: str) -> int:
    """A StatefulSet pod's ordinal: the number its name ends with (pg-2: 2)."""
    found = re.search(r"(\d+)$", name)
    return int(found.group(1)) if found else 0


def leaving(cluster: Cluster) -> list[str]:
    """The members a scale-down to ``spec.instances`` removes: a StatefulSet removes the
    highest ordinals."""
    return sorted(m.name for m in cluster.members if ordinal(m.name) >= cluster.instances)


def in_sync(cluster: Cluster, primary: Member, replica: Member) -> bool:
    """Streams from the primary, which reports it synchronous now, and stays: the member a
    planned move of the primary may go to."""
    return (
        replica.reachable
        and replica.role == "replica"
        and replica.upstream == primary.name
        # Under durability "preferred" no standby is synchronous: streaming is the most
        # there is to wait for.
        and (replica.name in cluster.sync_streaming or cluster.durability == "preferred")
        and not replica.terminating
    )


def leave_terminating_primary(
    cluster: Cluster, primary: Member, replicas: list[Member]
) -> Decision:
    """The primary's pod is being deleted (a drain, an eviction, a rollout, a ``kubectl
    delete``) while it still answers: a planned switchover to a synchronous replica, before
    its postgres stops, instead of a failover once it has (its preStop hook holds the
    shutdown while it is the primary, up to its grace period)."""
    ready = [r for r in replicas if in_sync(cluster, primary, r)]
    if not ready:
        return Decision(
            Action.NONE,
            f"{primary.name}'s pod is terminating, but no replica streams synchronously from "
            "it to switch over to; it is failed over if it stops",
        )
    best = max(ready, key=lambda m: (m.name == cluster.switchover_to, m.lsn, m.name))
    return Decision(
        Action.SWITCHOVER,
        f"{primary.name}'s pod is terminating; planned switchover to {best.name}",
        target=best.name,
        old_primary=primary.name,
    )


def scale(cluster: Cluster, primary: Member, replicas: list[Member]) -> Decision | None:
    """``spec.instances`` against the StatefulSet's replicas. Up: more replicas (each new pod
    clones the primary and becomes a synchronous candidate once it streams). Down: never the
    primary (it is switched over to a staying synchronous replica first), and only while a
    staying replica streams synchronously to take the leaving ones' place."""
    wanted, have = cluster.instances, cluster.expected_members
    if not wanted or not have or wanted == have:
        return None
    if wanted > have:
        return Decision(
            Action.SCALE, f"scaling up from {have} to {wanted} members", instances=wanted
        )
    gone = leaving(cluster)
    staying = [r for r in replicas if r.name not in gone and in_sync(cluster, primary, r)]
    if not staying:
        return Decision(
            Action.NONE,
            f"scaling down to {wanted} members waits: no staying replica streams synchronously "
            f"from {primary.name}",
        )
    if primary.name in gone:
        best = max(staying, key=lambda m: (m.lsn, m.name))
        return Decision(
            Action.SWITCHOVER,
            f"scaling down to {wanted} members removes {primary.name}, the primary; switching "
            f"over to {best.name} first",
            target=best.name,
            old_primary=primary.name,
        )
    return Decision(
        Action.SCALE,
        f"scaling down from {have} to {wanted} members: {', '.join(gone) or 'no pod'} leaves "
        f"(synchronous standbys: {', '.join(r.name for r in staying)})",
        instances=wanted,
    )


def rollout(cluster: Cluster, primary: Member, replicas: list[Member]) -> Decision:
    """A StatefulSet update under ``OnDelete``: the operator restarts the members on the new
    revision, the replicas first, one at a time, each back and synchronous before the next;
    then a switchover to an updated replica, after which the old primary restarts as a
    replica. A replica that does not come back holds the rollout where it is (and the
    decision says which one)."""
    updated = len(cluster.members) - len(cluster.outdated)
    progress = f"{updated} of {len(cluster.members)} members updated"
    if cluster.expected_members and len(cluster.members) < cluster.expected_members:
        missing = cluster.expected_members - len(cluster.members)
        return Decision(
            Action.NONE, f"rollout waits: {missing} member pod(s) not created yet ({progress})"
        )
    behind = [r.name for r in replicas if not in_sync(cluster, primary, r)]
    if behind:
        return Decision(
            Action.NONE,
            f"rollout waits: {', '.join(behind)} not streaming synchronously from "
            f"{primary.name} yet ({progress})",
        )
    old = sorted((r.name for r in replicas if r.name in cluster.outdated), reverse=True)
    if old:
        return Decision(
            Action.ROLL_REPLICA,
            f"rollout: restarting replica {old[0]} on the new revision ({progress})",
            target=old[0],
        )
    best = max(replicas, key=lambda m: (m.lsn, m.name == cluster.switchover_to, m.name))
    return Decision(
        Action.SWITCHOVER,
        f"rollout: every replica runs the new revision; switching over from {primary.name} "
        f"to {best.name}, so that {primary.name} restarts last, as a replica",
        target=best.name,
        old_primary=primary.name,
    )
