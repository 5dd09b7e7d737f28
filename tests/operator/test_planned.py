"""Planned moves of the primary in the decision: a terminating primary pod is switched over
(not failed over), and a StatefulSet update restarts the replicas first, one at a time, each
back and synchronous before the next, and the primary last through a switchover."""

from __future__ import annotations

from dataclasses import replace

import pytest

from leaderboard.operator.decide import Action, Cluster, Member, decide

P = Member("m0", reachable=True, role="primary", lsn=100)
R1 = Member("m1", reachable=True, role="replica", lsn=90, upstream="m0")
R2 = Member("m2", reachable=True, role="replica", lsn=95, upstream="m0")
BOTH = frozenset({"m1", "m2"})


def cluster(*members: Member, **kw: object) -> Cluster:
    defaults: dict[str, object] = {
        "primary": "m0", "sync_candidates": BOTH, "sync_streaming": BOTH, "expected_members": 3,
    }  # fmt: skip
    return Cluster(members=members, **{**defaults, **kw})  # type: ignore[arg-type]


def leaving(member: Member) -> Member:
    return replace(member, terminating=True)


# -- a primary pod that is being deleted (drain, eviction, kubectl delete)


def test_a_terminating_primary_that_answers_is_switched_over_to_the_furthest_replica() -> None:
    decision = decide(cluster(leaving(P), R1, R2))
    assert (decision.action, decision.target, decision.old_primary) == (
        Action.SWITCHOVER, "m2", "m0",
    )  # fmt: skip
    assert decision.reason == "m0's pod is terminating; planned switchover to m2"


def test_a_terminating_primary_prefers_the_requested_switchover_target() -> None:
    decision = decide(cluster(leaving(P), R1, R2, switchover_to="m1"))
    assert (decision.action, decision.target) == (Action.SWITCHOVER, "m1")


def test_a_terminating_primary_moves_only_to_a_replica_that_is_synchronous_now() -> None:
    # m2 streams but the primary does not report it synchronous; m1 does not stream at all
    decision = decide(
        cluster(leaving(P), replace(R1, upstream=None), R2, sync_streaming=frozenset())
    )
    assert decision.action is Action.NONE
    assert "no replica streams synchronously" in decision.reason


def test_a_terminating_primary_that_stopped_answering_is_failed_over_at_once() -> None:
    gone = Member("m0", reachable=False, failed_probes=1, terminating=True)
    decision = decide(cluster(gone, R1, R2))
    assert (decision.action, decision.target) == (Action.PROMOTE, "m2")
    assert "stopped answering while its pod terminates" in decision.reason


def test_a_terminating_replica_is_left_to_its_statefulset() -> None:
    decision = decide(cluster(P, R1, Member("m2", reachable=False, terminating=True)))
    assert decision.action is Action.NONE
    assert "m2's pod is terminating" in decision.reason


# -- a rollout: the StatefulSet's update revision differs from some pods'


@pytest.mark.parametrize(
    ("outdated", "target"),
    [({"m0", "m1", "m2"}, "m2"), ({"m0", "m1"}, "m1"), ({"m1"}, "m1")],
)
def test_a_rollout_restarts_outdated_replicas_first_one_at_a_time(
    outdated: set[str], target: str
) -> None:
    decision = decide(cluster(P, R1, R2, outdated=frozenset(outdated)))
    assert (decision.action, decision.target) == (Action.ROLL_REPLICA, target)
    assert decision.reason.startswith(f"rollout: restarting replica {target}")


def test_the_primary_goes_last_through_a_switchover_to_an_updated_replica() -> None:
    decision = decide(cluster(P, R1, R2, outdated=frozenset({"m0"})))
    assert (decision.action, decision.target, decision.old_primary) == (
        Action.SWITCHOVER, "m2", "m0",
    )  # fmt: skip
    assert "so that m0 restarts last, as a replica" in decision.reason


@pytest.mark.parametrize(
    ("members", "streaming", "why"),
    [
        ((P, R1), BOTH, "1 member pod(s) not created yet"),
        ((P, R1, replace(R2, upstream=None)), BOTH, "m2 not streaming synchronously"),
        ((P, R1, R2), frozenset({"m1"}), "m2 not streaming synchronously"),
    ],
)
def test_a_rollout_waits_for_the_restarted_member_to_be_back_and_synchronous(
    members: tuple[Member, ...], streaming: frozenset[str], why: str
) -> None:
    decision = decide(cluster(*members, outdated=frozenset({"m0", "m1"}), sync_streaming=streaming))
    assert decision.action is Action.NONE
    assert decision.reason.startswith("rollout waits") and why in decision.reason


def test_repairs_come_before_the_rollout() -> None:
    down = Member("m2", reachable=False, running=False)
    decision = decide(cluster(P, R1, down, outdated=frozenset({"m1"})))
    assert (decision.action, decision.target) == (Action.REJOIN, "m2")


def test_no_rollout_when_every_member_runs_the_update_revision() -> None:
    decision = decide(cluster(P, R1, R2))
    assert decision.action is Action.NONE and "rollout" not in decision.reason


# -- spec.instances against the StatefulSet's replicas


def test_more_instances_scale_the_statefulset_up() -> None:
    decision = decide(cluster(P, R1, R2, instances=4))
    assert (decision.action, decision.instances) == (Action.SCALE, 4)
    assert decision.reason == "scaling up from 3 to 4 members"


def test_fewer_instances_remove_the_highest_ordinals_while_a_staying_replica_is_in_sync() -> None:
    decision = decide(cluster(P, R1, R2, instances=2))
    assert (decision.action, decision.instances) == (Action.SCALE, 2)
    assert decision.reason == (
        "scaling down from 3 to 2 members: m2 leaves (synchronous standbys: m1)"
    )


def test_a_scale_down_that_would_remove_the_primary_switches_over_first() -> None:
    primary = replace(P, name="m2")
    r0 = Member("m0", reachable=True, role="replica", lsn=90, upstream="m2")
    r1 = Member("m1", reachable=True, role="replica", lsn=95, upstream="m2")
    state = cluster(
        primary, r0, r1, primary="m2", instances=2, sync_streaming=frozenset({"m0", "m1"})
    )
    decision = decide(state)
    assert (decision.action, decision.target, decision.old_primary) == (
        Action.SWITCHOVER, "m1", "m2",
    )  # fmt: skip
    assert "removes m2, the primary; switching over to m1 first" in decision.reason


def test_a_scale_down_waits_while_no_staying_replica_is_synchronous() -> None:
    decision = decide(cluster(P, R1, R2, instances=2, sync_streaming=frozenset({"m2"})))
    assert decision.action is Action.NONE
    assert "no staying replica streams synchronously" in decision.reason


def test_under_preferred_durability_a_streaming_replica_is_enough_to_move_on() -> None:
    # No standby is synchronous then: waiting for one would hold every planned move for good.
    state = cluster(
        P, R1, R2, durability="preferred", sync_streaming=frozenset(), outdated=frozenset({"m1"})
    )
    decision = decide(state)
    assert (decision.action, decision.target) == (Action.ROLL_REPLICA, "m1")
    decision = decide(
        cluster(leaving(P), R1, R2, durability="preferred", sync_streaming=frozenset())
    )
    assert (decision.action, decision.target) == (Action.SWITCHOVER, "m2")
