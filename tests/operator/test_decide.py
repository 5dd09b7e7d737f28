"""Every branch of the failover decision, as a table: observed state in, action and reason out."""

from __future__ import annotations

import pytest

from leaderboard.operator.decide import (
    Action,
    Cluster,
    Decision,
    Member,
    decide,
    remember_candidates,
)
from leaderboard.operator.probe import Probe, Stalls

P = Member("m0", reachable=True, role="primary", lsn=100)
R1 = Member("m1", reachable=True, role="replica", lsn=90, upstream="m0")
R2 = Member("m2", reachable=True, role="replica", lsn=95, upstream="m0")
DEAD = Member("m0", reachable=False, failed_probes=3, running=False)
HUNG = Member("m0", reachable=False, failed_probes=3, running=True)


def cluster(*members: Member, **kw: object) -> Cluster:
    defaults: dict[str, object] = {"primary": "m0", "sync_candidates": frozenset({"m1", "m2"})}
    return Cluster(members=members, **{**defaults, **kw})  # type: ignore[arg-type]


CASES: list[tuple[str, Cluster, Action, str | None, str]] = [
    ("paused", cluster(DEAD, R1, paused=True), Action.NONE, None, "paused"),
    (
        "the primary came back in recovery, nobody else primary: promote it back",
        cluster(Member("m0", reachable=True, role="replica", lsn=100), R1),
        Action.PROMOTE,
        "m0",
        "promoting it back",
    ),
    (
        "the primary in recovery while another accepts writes: no guessing",
        cluster(Member("m0", reachable=True, role="replica"), Member("m1", True, "primary")),
        Action.NONE,
        None,
        "m1 accepts writes",
    ),
    (
        "a replica that answers but never streams is rejoined",
        cluster(P, Member("m1", reachable=True, role="replica", stalled_probes=10)),
        Action.REJOIN,
        "m1",
        "has not streamed for 10 probes",
    ),
    (
        "a replica briefly not streaming is left alone",
        cluster(P, Member("m1", reachable=True, role="replica", stalled_probes=9), R2),
        Action.NONE,
        None,
        "1 of 2 replicas streaming",
    ),
    ("healthy", cluster(P, R1, R2), Action.NONE, None, "2 of 2 replicas streaming"),
    (
        "a primary none of whose answering standbys streams is cut off from them: promote",
        cluster(
            P,
            Member("m1", reachable=True, role="replica", lsn=90, stalled_probes=10),
            Member("m2", reachable=True, role="replica", lsn=95, stalled_probes=12),
        ),
        Action.PROMOTE,
        "m2",
        "it is cut off from them; promoting m2",
    ),
    (
        "...but not while it still reports a synchronous standby",
        cluster(
            P,
            Member("m1", reachable=True, role="replica", lsn=90, stalled_probes=10),
            Member("m2", reachable=True, role="replica", lsn=95, stalled_probes=12),
            sync_streaming=frozenset({"m2"}),
        ),
        Action.REJOIN,
        "m1",
        "has not streamed",
    ),
    (
        "...nor while one standby still streams",
        cluster(
            P,
            Member("m1", reachable=True, role="replica", lsn=90, stalled_probes=10),
            Member("m2", reachable=True, role="replica", lsn=95, upstream="m0"),
        ),
        Action.REJOIN,
        "m1",
        "has not streamed",
    ),
    (
        "...and while the others have not stalled long enough yet, nobody is rejoined: the"
        " walreceivers time out a moment apart (rejoining the first lost the promotion)",
        cluster(
            P,
            Member("m1", reachable=True, role="replica", lsn=90, stalled_probes=10),
            Member("m2", reachable=True, role="replica", lsn=95, stalled_probes=9),
        ),
        Action.NONE,
        None,
        "waiting until each has stalled for 10 probes",
    ),
    (
        "...nor when a standby does not answer (it may be the one whose link failed)",
        cluster(
            P,
            Member("m1", reachable=True, role="replica", lsn=90, stalled_probes=10),
            Member("m2", reachable=False, failed_probes=1),
        ),
        Action.REJOIN,
        "m1",
        "has not streamed",
    ),
    (
        "one slow probe is not a failure",
        cluster(Member("m0", reachable=False, failed_probes=1), R1),
        Action.NONE,
        None,
        "missed 1 of 3 probes",
    ),
    (
        "a primary whose process is gone is not waited for",
        cluster(
            Member("m0", reachable=False, failed_probes=1, running=False),
            R1,
            sync_candidates=frozenset({"m1"}),
        ),
        Action.PROMOTE,
        "m1",
        "not running",
    ),
    (
        "a hung primary (process still there) gets its probes",
        cluster(Member("m0", reachable=False, failed_probes=2, running=True), R1),
        Action.NONE,
        None,
        "missed 2 of 3 probes",
    ),
    (
        "dead primary: promote the highest LSN",
        cluster(DEAD, R1, R2),
        Action.PROMOTE,
        "m2",
        "highest",
    ),
    (
        "required: a candidate missing may hold the newest write; the gone primary restarts",
        cluster(DEAD, R1, Member("m2", reachable=False, failed_probes=3)),
        Action.RESTART,
        "m0",
        "do not answer and may hold the newest acknowledged write (durability: required); "
        "starting m0 again in place",
    ),
    (
        "required: a candidate missing while the primary hangs: wait",
        cluster(HUNG, R1, Member("m2", reachable=False, failed_probes=3)),
        Action.NONE,
        None,
        "do not answer",
    ),
    (
        "required: no synchronous replica and the primary gone: restart it in place",
        cluster(DEAD, R1, sync_candidates=frozenset()),
        Action.RESTART,
        "m0",
        "no replica was synchronous: promoting one could lose acknowledged writes "
        "(durability: required); starting m0 again in place",
    ),
    (
        "required: no synchronous replica and the primary hangs: no promotion, no restart",
        cluster(HUNG, R1, sync_candidates=frozenset()),
        Action.NONE,
        None,
        "no replica was synchronous",
    ),
    (
        "preferred: an asynchronous replica may be promoted",
        cluster(DEAD, R1, sync_candidates=frozenset(), durability="preferred"),
        Action.PROMOTE,
        "m1",
        "promoting m1",
    ),
    (
        "no healthy replica, the primary hangs",
        cluster(HUNG, Member("m1", reachable=False, failed_probes=5), durability="preferred"),
        Action.NONE,
        None,
        "no healthy replica",
    ),
    (
        "no healthy replica, the primary gone: restart it in place",
        cluster(DEAD, Member("m1", reachable=False, failed_probes=5), durability="preferred"),
        Action.RESTART,
        "m0",
        "no healthy replica can take over; starting m0 again",
    ),
    (
        "old primary back as a primary: fence it",
        cluster(
            Member("m0", reachable=True, role="primary"),
            Member("m1", reachable=True, role="primary"),
            primary="m1",
        ),
        Action.FENCE,
        "m0",
        "accepts writes",
    ),
    (
        "a replica is down: rejoin it",
        cluster(P, Member("m1", reachable=False, running=False)),
        Action.REJOIN,
        "m1",
        "rejoining",
    ),
    (
        "a replica runs but is hung: fence it",
        cluster(P, Member("m1", reachable=False, running=True, failed_probes=3)),
        Action.FENCE,
        "m1",
        "has not answered",
    ),
    (
        "a replica starting up is left alone",
        cluster(P, Member("m1", reachable=False, running=True, failed_probes=1)),
        Action.NONE,
        None,
        "0 of 1 replicas streaming",
    ),
    (
        "a replica following the old primary is re-pointed",
        cluster(P, Member("m1", reachable=True, role="replica", upstream="m9")),
        Action.REPOINT,
        "m1",
        "pointing it at m0",
    ),
    (
        "sync turned off while a standby streams: turn it on",
        cluster(Member("m0", reachable=True, role="primary", sync_standbys_enabled=False), R1),
        Action.ENABLE_SYNC,
        "m0",
        "requiring a synchronous standby",
    ),
    (
        "switchover to a synchronous replica",
        cluster(P, R1, switchover_to="m1"),
        Action.SWITCHOVER,
        "m1",
        "planned switchover",
    ),
    (
        "switchover waits for a replica that is not synchronous",
        cluster(P, R1, switchover_to="m1", sync_candidates=frozenset()),
        Action.NONE,
        None,
        "waits until it streams synchronously",
    ),
]


@pytest.mark.parametrize(
    ("state", "action", "target", "reason"),
    [pytest.param(c, a, t, r, id=name) for name, c, a, t, r in CASES],
)
def test_decision(state: Cluster, action: Action, target: str | None, reason: str) -> None:
    decision = decide(state)
    assert decision.action is action, str(decision)
    assert decision.target == target
    assert reason in decision.reason


def test_a_promotion_names_the_old_primary_and_reads_like_a_sentence() -> None:
    decision = decide(cluster(DEAD, R1, R2))
    assert isinstance(decision, Decision) and decision.old_primary == "m0"
    assert str(decision) == (
        "promote m2: m0 is not running (its process or pod is gone); promoting m2 "
        "(received LSN 5F, the highest)"
    )


def test_preferred_durability_says_when_writes_may_be_lost() -> None:
    decision = decide(cluster(DEAD, R1, sync_candidates=frozenset(), durability="preferred"))
    assert decision.notes and "not synchronous" in decision.notes[0]


def _seen(lsn: int, *, streaming: bool = False, in_recovery: bool = True) -> Probe:
    return Probe(
        in_recovery=in_recovery, lsn=lsn, timeline=1, sync_names="",
        upstream_port=5433 if streaming else None, sync_standbys=frozenset(),
    )  # fmt: skip


def test_a_replica_is_stalled_only_while_it_neither_streams_nor_replays() -> None:
    stalls = Stalls()
    # Restarted after a long outage: it replays its own WAL first (the LSN moves), with no
    # walreceiver. The first sighting counts (nothing to compare with), progress resets it.
    assert [stalls.see("m1", _seen(lsn)) for lsn in (100, 200, 300, 400)] == [1, 0, 0, 0]
    # Replay done, still not streaming: every probe that finds it where it was counts.
    assert [stalls.see("m1", _seen(400)) for _ in range(3)] == [1, 2, 3]
    assert stalls.see("m1", _seen(400, streaming=True)) == 0
    assert stalls.see("m1", _seen(400)) == 1
    stalls.reset("m1")
    assert stalls.see("m1", _seen(400)) == 1  # counted afresh (its LSN is still remembered)
    assert stalls.see("m0", _seen(900, in_recovery=False)) == 0  # a primary never stalls


def test_a_dying_primary_that_reports_no_standby_does_not_erase_the_candidates() -> None:
    # A probe answered by a backend that outlives its killed postmaster sees no walsender.
    members = frozenset({"member0", "member1", "member2"})
    known = frozenset({"member1"})
    assert remember_candidates(known, frozenset(), members) == {"member1"}
    assert remember_candidates(known, frozenset({"member2"}), members) == {"member1", "member2"}


def test_a_candidate_that_is_no_longer_a_member_is_forgotten() -> None:
    members = frozenset({"member0", "member1"})
    assert remember_candidates(frozenset({"member1", "member2"}), frozenset(), members) == {
        "member1"
    }
