"""Prometheus metrics of the failover operator (the dashboards and alerts read these).

Labelled by cluster (``namespace/name``) and member, never by anything unbounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from leaderboard.operator.decide import Action, Cluster, Decision

DECISIONS = Counter(
    "leaderboard_operator_decisions_total",
    "Decisions that changed (one per logged line), by action",
    ["cluster", "action"],
)
FAILOVERS = Counter(
    "leaderboard_operator_failovers_total", "Promotions carried out", ["cluster", "kind"]
)
LAST_FAILOVER = Gauge(
    "leaderboard_operator_last_failover_timestamp_seconds",
    "Unix time of the last promotion",
    ["cluster"],
)
LEADER = Gauge(
    "leaderboard_operator_leader", "1 while this instance holds the cluster's lease", ["cluster"]
)
MEMBER_UP = Gauge(
    "leaderboard_pg_member_up", "1 when the member answered the last probe", ["cluster", "member"]
)
PRIMARY = Gauge(
    "leaderboard_pg_primary",
    "1 for the member that answers as primary and is the recorded primary",
    ["cluster", "member"],
)
LAG = Gauge(
    "leaderboard_pg_replication_lag_bytes",
    "WAL the replica has not received yet (primary's LSN minus its received LSN)",
    ["cluster", "member"],
)
SYNC_STANDBYS = Gauge(
    "leaderboard_pg_sync_standbys",
    "Standbys streaming as synchronous candidates of the primary",
    ["cluster"],
)
WRITABLE = Gauge(
    "leaderboard_pg_writable_primary", "1 when the recorded primary accepts writes", ["cluster"]
)


def start(name: str) -> None:
    """A cluster this process now looks after: its counters exist at 0 from here on, so a
    dashboard shows 0 rather than "No data", and the first failover is an increase (a series
    born at 1 has none: the failover alert would never fire)."""
    for kind in ("failover", "switchover"):
        FAILOVERS.labels(name, kind)
    for action in Action:
        DECISIONS.labels(name, action.value)


def observe(name: str, cluster: Cluster) -> None:
    primary = cluster.member(cluster.primary)
    writable = primary is not None and primary.reachable and primary.role == "primary"
    WRITABLE.labels(name).set(1 if writable else 0)
    SYNC_STANDBYS.labels(name).set(len(cluster.sync_streaming) if writable else 0)
    for m in cluster.members:
        MEMBER_UP.labels(name, m.name).set(1 if m.reachable else 0)
        PRIMARY.labels(name, m.name).set(1 if writable and m.name == cluster.primary else 0)
        if writable and primary is not None and m.role == "replica":
            LAG.labels(name, m.name).set(max(0, primary.lsn - m.lsn))
        else:
            LAG.labels(name, m.name).set(0)


def decided(name: str, decision: Decision) -> None:
    DECISIONS.labels(name, decision.action.value).inc()


def promoted(name: str, kind: str, at: float) -> None:
    FAILOVERS.labels(name, kind).inc()
    LAST_FAILOVER.labels(name).set(at)
