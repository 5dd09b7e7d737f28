"""The history checker's rules on made-up histories: each violation it exists to catch is
caught, and a clean history passes."""

from __future__ import annotations

from leaderboard_tools.chaos.history import (
    Check,
    FaultRecord,
    downtime,
    summary_by_kind,
    unsafe_acks,
)
from leaderboard_tools.devstack.consistency import ranking_diff


def _check(**changes: object) -> Check:
    fields: dict[str, object] = {
        "acknowledged": 10,
        "lost": 0,
        "split_brain": 0,
        "direct_acknowledged": 5,
        "direct_lost": 0,
        "direct_split_brain": 0,
        "ranking_equal": True,
        "viewers_at_last_seq": True,
        "all_recovered": True,
        **changes,
    }
    return Check(**fields)  # type: ignore[arg-type]


def test_downtime_is_the_longest_gap_from_the_last_ack_before_the_fault() -> None:
    # acks every 0.1 s until 10.0, the fault at 10.05, nothing until 13.0, then steady again
    acks = [(t / 10 - 0.05, t / 10) for t in range(1, 101)]
    acks += [(12.9, 13.0), (13.0, 13.1), (13.1, 13.2)]
    assert downtime(acks, 10.05, 20.0) == (3.0, True)
    # the next fault's window is not counted in this one's
    assert downtime(acks, 10.05, 12.0) == (None, False)


def test_a_write_sent_before_the_fault_does_not_show_writes_resumed() -> None:
    acks = [(9.0, 9.1), (9.9, 14.0)]  # sent before the fault, acknowledged long after
    assert downtime(acks, 10.0, 20.0) == (None, False)


def test_missing_acks_after_a_demotion_or_inside_an_isolation_are_split_brain() -> None:
    demoted = {"member0": [100.0]}
    isolated = {"member1": [(200.0, 210.0)]}
    missing = [
        ("member0", 99.0),  # before its demotion: lost, but it was still the primary
        ("member0", 101.0),  # acknowledged by a demoted primary
        ("member1", 205.0),  # acknowledged while cut off
        ("member1", 211.0),  # after the cut healed
        ("", 150.0),  # behind the API: after some demotion
    ]
    assert unsafe_acks(missing, demoted, isolated) == 3
    assert unsafe_acks([], demoted, isolated) == 0


def test_each_violation_fails_the_check_and_says_what() -> None:
    assert _check().passed
    cases = {
        "lost": {"lost": 1},
        "demoted or isolated": {"split_brain": 1},
        "direct writes acknowledged but missing": {"direct_lost": 2},
        "after demotion": {"direct_split_brain": 1},
        "Redis ranking": {"ranking_equal": False},
        "last seq": {"viewers_at_last_seq": False},
        "not recovered": {"all_recovered": False},
    }
    for words, change in cases.items():
        check = _check(**change)
        assert not check.passed
        assert any(words in v for v in check.violations), (words, check.violations)
    assert not _check(details=["VIOLATION: the API's top 10 differs"]).passed
    assert _check(details=["ranking: some note"]).passed


def test_ranking_diff_names_who_differs() -> None:
    assert ranking_diff({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    diff = ranking_diff({"a": 1, "c": 5}, {"a": 2, "b": 3})
    assert diff == ["a: redis 1 postgres 2", "b: redis None postgres 3", "c: redis 5 postgres None"]
    assert ranking_diff({str(i): i for i in range(9)}, {}, limit=2)[-1] == "... and 7 more"


def test_summary_by_fault_keeps_the_worst_case_and_what_never_recovered() -> None:
    records = [
        FaultRecord("kill-primary", "process", "member0", 0.0, downtime_s=2.0, recovered_s=3.0),
        FaultRecord("kill-primary", "process", "member1", 10.0, downtime_s=4.0, recovered_s=5.0),
        FaultRecord("kill-api", "api", "api", 20.0, downtime_s=None, writes_resumed=False),
    ]
    table = summary_by_kind(records)
    assert table["kill-primary"] == {
        "kind": "process",
        "count": 2,
        "downtime_median_s": 4.0,
        "downtime_max_s": 4.0,
        "recovery_max_s": 5.0,
        "not_recovered": 0,
    }
    assert table["kill-api"]["not_recovered"] == 1
