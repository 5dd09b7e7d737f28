"""The drill's figures from its writers' acknowledgements, without a cluster."""

from __future__ import annotations

from leaderboard.config import Settings
from leaderboard_tools.operator.drill import DrillResult, Load, _downtime, passed, summary


def _load(acks: list[tuple[float, float]]) -> Load:
    load = Load("http://127.0.0.1:1", Settings())
    load.acks = [(f"u{i}", sent, ack) for i, (sent, ack) in enumerate(acks)]
    return load


def test_downtime_is_the_longest_gap_from_the_last_acknowledgement_before_the_fault() -> None:
    # fault at 10.0; last ack before it at 9.9; in flight, acked at 10.05; back at 11.6
    load = _load([(9.8, 9.9), (9.95, 10.05), (11.5, 11.6), (11.6, 11.7)])
    assert _downtime(load, 10.0, 10.0) == 1.55  # 10.05 -> 11.6


def test_writes_acknowledged_before_the_fault_landed_do_not_count_as_writes_coming_back() -> None:
    # kubectl took 0.8 s to land the fault; the writes went on meanwhile, then never again
    load = _load([(9.8, 9.9), (10.1, 10.2), (10.3, 10.4), (10.5, 10.6), (10.7, 10.85)])
    assert _downtime(load, 10.0, 10.8) is None
    load.acks.append(("back", 12.0, 12.1))
    assert _downtime(load, 10.0, 10.8) == 1.25  # 10.85 -> 12.1


def _result(**change: object) -> DrillResult:
    fields: dict[str, object] = {
        "fault": "kill", "old_primary": "member0", "new_primary": "member1",
        "detection_s": 0.2, "promotion_s": 0.3, "write_downtime_s": 1.1, "acknowledged": 400,
        "failed_requests": 12, "lost_writes": 0, "demoted_acks": 0, "rejoined_s": 2.2,
    }  # fmt: skip
    return DrillResult(**{**fields, **change})  # type: ignore[arg-type]


def test_a_drill_passes_only_if_writes_came_back_were_checked_and_none_was_lost() -> None:
    assert passed(summary([_result(), _result()]))
    assert not passed(summary([_result(), _result(write_downtime_s=None)]))  # never came back
    no_primary = _result(new_primary=None, lost_writes=None, demoted_acks=None)
    assert not passed(summary([_result(), no_primary]))  # nothing could be checked
    assert not passed(summary([_result(lost_writes=1)]))
    assert not passed(summary([_result(lost_writes=1, demoted_acks=1)]))
    assert not passed(summary([_result(rejoined_s=None)]))
