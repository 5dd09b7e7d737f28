"""Prometheus metrics of the failover operator (the dashboards and alerts read these).

Labelled by cluster (``namespace/name``) and member, never by anything unbounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from leaderboard.operator.decide import Action, Cluster, Decision
from leaderboard.operator.probe import Archiver

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


ARCHIVE_FAILING = Gauge(
    "leaderboard_pg_archive_failing",
    "1 when the primary's last WAL archive attempt failed (none succeeded since)",
    ["cluster"],
)
ARCHIVE_FAILURES = Gauge(
    "leaderboard_pg_archive_failed_count",
    "The primary's failed archive attempts since it started (pg_stat_archiver)",
    ["cluster"],
)
ARCHIVE_LAST = Gauge(
    "leaderboard_pg_archive_last_archived_timestamp_seconds",
    "Unix time the primary last archived a WAL segment",
    ["cluster"],
)
ARCHIVE_READY = Gauge(
    "leaderboard_pg_archive_ready_segments",
    "WAL segments the primary holds until they are archived (16 MiB each)",
    ["cluster"],
)
BACKUP_LAST = Gauge(
    "leaderboard_backup_last_success_timestamp_seconds",
    "Unix time the newest base backup in the repository finished",
    ["cluster"],
)
BACKUP_REPOSITORY_UP = Gauge(
    "leaderboard_backup_repository_up",
    "1 when the backup repository answered the last check (pgbackrest info)",
    ["cluster"],
)


def archiving(name: str, archiver: Archiver | None) -> None:
    """The primary's archiver (nothing when archiving is off or no primary answered)."""
    if archiver is None:
        return
    ARCHIVE_FAILING.labels(name).set(1 if archiver.failing else 0)
    ARCHIVE_FAILURES.labels(name).set(archiver.failed_count)
    ARCHIVE_READY.labels(name).set(archiver.ready_segments)
    if archiver.last_archived is not None:
        ARCHIVE_LAST.labels(name).set(archiver.last_archived)


def backups(name: str, *, reachable: bool, last_finished: float | None) -> None:
    """What the repository says (``pgbackrest info``)."""
    BACKUP_REPOSITORY_UP.labels(name).set(1 if reachable else 0)
    if last_finished is not None:
        BACKUP_LAST.labels(name).set(last_finished)


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
