"""The history check at the end of a chaos run, and the per-fault figures.

Pure functions over what the clients saw (every acknowledgement with its send and ack
times), what the operator recorded (promotions) and what the final primary holds, so the
rules can be tested on made-up histories:

- every acknowledged completion is on the final primary (else: lost);
- none was acknowledged by a member after it was demoted or while it was isolated: an
  acknowledgement missing from the final primary that came after the promotion that
  replaced its member, or while a fault cut that member off, is counted as such (a
  split-brain acknowledgement), on top of being lost;
- the same for the direct client, which writes to the primary it connected to for as long as
  that connection lasts;
- the Redis ranking equals PostgreSQL's, and every viewer ends at the last seq.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRecord:
    fault: str
    kind: str
    victim: str
    injected: float  # Unix times
    healed: float | None = None
    recovered_s: float | None = None  # heal -> healthy again (None: not within the deadline)
    promoted: str | None = None  # the member promoted while the fault held
    promoted_s: float | None = None  # inject -> promoted
    downtime_s: float | None = None  # the longest time without an acknowledged write
    writes_resumed: bool = True
    acknowledged: int = 0
    failed: int = 0


@dataclass
class Check:
    acknowledged: int
    lost: int
    split_brain: int
    direct_acknowledged: int
    direct_lost: int
    direct_split_brain: int
    ranking_equal: bool
    viewers_at_last_seq: bool
    all_recovered: bool
    details: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} acknowledged completions lost (not on the final primary)")
        if self.split_brain:
            found.append(f"{self.split_brain} acknowledged by a demoted or isolated member")
        if self.direct_lost:
            found.append(f"{self.direct_lost} direct writes acknowledged but missing")
        if self.direct_split_brain:
            found.append(f"{self.direct_split_brain} direct writes acknowledged after demotion")
        if not self.ranking_equal:
            found.append("the Redis ranking differs from PostgreSQL's")
        if not self.viewers_at_last_seq:
            found.append("some viewer did not reach the last seq")
        if not self.all_recovered:
            found.append("some fault was not recovered from (see faults)")
        return found + [d for d in self.details if d.startswith("VIOLATION")]

    @property
    def passed(self) -> bool:
        return not self.violations


def downtime(
    acks: Sequence[tuple[float, float]], start: float, end: float
) -> tuple[float | None, bool]:
    """The longest time without an acknowledgement from the fault at ``start`` until ``end``
    (the next fault, or the end of the run), counted from the last acknowledgement before
    ``start``; and whether a write *sent* after ``start`` was acknowledged at all (else the
    fault's downtime is unknown: writes never resumed). ``acks``: (sent, acked) pairs."""
    acked = sorted(a for _, a in acks)
    resumed = any(start < s and a <= end for s, a in acks)
    if not resumed:
        return None, False
    anchor_i = bisect.bisect_right(acked, start) - 1
    anchor = acked[anchor_i] if anchor_i >= 0 else start
    inside = [a for a in acked if anchor < a <= end]
    gaps = [b - a for a, b in zip([anchor, *inside], inside, strict=False)]
    return (round(max(gaps), 3) if gaps else None), True


def unsafe_acks(
    missing: Iterable[tuple[str, float]],
    demoted: dict[str, list[float]],
    isolated: dict[str, list[tuple[float, float]]],
) -> int:
    """Of acknowledgements missing from the final primary, ``(member, acked at)`` (member
    ``""``: unknown, behind the API), those that came after a promotion replaced a member or
    while a fault isolated it: acknowledged by a member that was no longer allowed to."""
    count = 0
    any_demotion = sorted(t for times in demoted.values() for t in times)
    any_isolation = [w for windows in isolated.values() for w in windows]
    for member, at in missing:
        demotions = demoted.get(member, []) if member else any_demotion
        windows = isolated.get(member, []) if member else any_isolation
        if any(t < at for t in demotions) or any(a <= at <= b for a, b in windows):
            count += 1
    return count


def summary_by_kind(records: Sequence[FaultRecord]) -> dict[str, dict[str, Any]]:
    """Per fault: how often, the worst write downtime and recovery (the README table)."""
    table: dict[str, dict[str, Any]] = {}
    for r in records:
        row = table.setdefault(
            r.fault, {"kind": r.kind, "count": 0, "downtimes": [], "recovered": [], "stuck": 0}
        )
        row["count"] += 1
        if r.downtime_s is not None:
            row["downtimes"].append(r.downtime_s)
        if r.recovered_s is None or not r.writes_resumed:
            row["stuck"] += 1
        else:
            row["recovered"].append(r.recovered_s)
    out = {}
    for name, row in table.items():
        downtimes, recovered = sorted(row["downtimes"]), row["recovered"]
        out[name] = {
            "kind": row["kind"],
            "count": row["count"],
            "downtime_median_s": downtimes[len(downtimes) // 2] if downtimes else None,
            "downtime_max_s": downtimes[-1] if downtimes else None,
            "recovery_max_s": round(max(recovered), 3) if recovered else None,
            "not_recovered": row["stuck"],
        }
    return out
