"""Probing one PostgreSQL member over SQL, with a hard deadline."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import asyncpg

PROBE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
            ELSE pg_current_wal_lsn() END AS lsn,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline,
       current_setting('synchronous_standby_names') AS sync_names,
       (SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming') AS upstream_port
"""

# The primary's WAL archiver: what pushed, what failed, and the segments waiting (each one
# held in pg_wal until it is archived: a failing archive fills the disk). pg_stat_archiver is
# reset when the server restarts; the timestamps say what the counters cannot.
ARCHIVER_SQL = """
SELECT current_setting('archive_mode') <> 'off' AS enabled,
       failed_count,
       extract(epoch FROM last_archived_time) AS last_archived,
       extract(epoch FROM last_failed_time) AS last_failed,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') AS ready
  FROM pg_stat_archiver
"""

REPLICATION_SQL = """
SELECT application_name FROM pg_stat_replication
 WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')
"""


@dataclass(frozen=True)
class Archiver:
    """The primary's archiver, as :data:`ARCHIVER_SQL` saw it."""

    failed_count: int
    last_archived: float | None  # Unix time
    last_failed: float | None
    ready_segments: int

    @property
    def failing(self) -> bool:
        """The last attempt failed (a success since would be later)."""
        return self.last_failed is not None and (
            self.last_archived is None or self.last_failed > self.last_archived
        )


@dataclass(frozen=True)
class Probe:
    in_recovery: bool
    lsn: int
    timeline: int
    sync_names: str
    upstream_port: int | None
    sync_standbys: frozenset[str]  # primary only: standbys streaming as sync/quorum
    archiver: Archiver | None = None  # primary only, when archive_mode is on


async def probe(
    host: str, port: int, password: str, timeout: float, *, tls: ssl.SSLContext | None = None
) -> Probe:
    """Raise on any failure (refused, timed out, auth, certificate): the caller counts it as
    a miss. ``tls``: connect over TLS with this context (the members' CA)."""
    async with asyncio.timeout(timeout):
        conn = await asyncpg.connect(
            host=host, port=port, user="postgres", password=password, database="postgres",
            timeout=timeout, command_timeout=timeout, ssl=tls,
            server_settings={"application_name": "leaderboard-operator"},
        )  # fmt: skip
        try:
            row = await conn.fetchrow(PROBE_SQL)
            assert row is not None
            standbys: frozenset[str] = frozenset()
            archiver = None
            if not row["in_recovery"]:
                standbys = await sync_standbys(conn)
                archiver = await archiver_of(conn)
        finally:
            conn.terminate()
    return Probe(
        in_recovery=row["in_recovery"],
        lsn=int(row["lsn"] or 0),
        timeline=int(row["timeline"] or 0),
        sync_names=row["sync_names"],
        upstream_port=row["upstream_port"],
        sync_standbys=standbys,
        archiver=archiver,
    )


async def archiver_of(conn: asyncpg.Connection) -> Archiver | None:
    row = await conn.fetchrow(ARCHIVER_SQL)
    if row is None or not row["enabled"]:
        return None
    return Archiver(
        failed_count=int(row["failed_count"]),
        last_archived=None if row["last_archived"] is None else float(row["last_archived"]),
        last_failed=None if row["last_failed"] is None else float(row["last_failed"]),
        ready_segments=int(row["ready"]),
    )


async def sync_standbys(conn: asyncpg.Connection, timeout: float | None = None) -> frozenset[str]:
    """The standbys streaming from the primary behind ``conn`` as synchronous candidates."""
    rows = await conn.fetch(REPLICATION_SQL, timeout=timeout)
    return frozenset(r["application_name"] for r in rows)


def leaked_cancellation() -> bool:
    """Whether a CancelledError that reached a round's loop was meant for someone else: nobody
    called ``cancel()`` on the running task. Nested timeouts (ours around asyncpg's) and
    3.11's cancellation counting are subtle enough that one might escape a probe; not seen
    here, but if one did the loop would die of it and the operator stop failing over without
    a word."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class Stalls:
    """Per member, the probes in a row that found it in recovery but neither streaming nor
    replaying: a replica that replays its own WAL after a restart (which can take minutes
    after a long outage) makes progress and is not stalled; rejoining it would start over."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._lsn: dict[str, int] = {}

    def see(self, name: str, seen: Probe) -> int:
        moved = seen.lsn > self._lsn.get(name, seen.lsn)
        self._lsn[name] = seen.lsn
        if not seen.in_recovery or seen.upstream_port is not None or moved:
            self._count[name] = 0
        else:
            self._count[name] = self._count.get(name, 0) + 1
        return self._count[name]

    def reset(self, name: str | None = None) -> None:
        """Start counting again (all members: after a promotion; one: after its rejoin)."""
        if name is None:
            self._count.clear()
        else:
            self._count.pop(name, None)
