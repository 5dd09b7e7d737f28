"""Probing one PostgreSQL member over SQL, with a hard deadline."""

from __future__ import annotations

import asyncio
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

REPLICATION_SQL = """
SELECT application_name FROM pg_stat_replication
 WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')
"""


@dataclass(frozen=True)
class Probe:
    in_recovery: bool
    lsn: int
    timeline: int
    sync_names: str
    upstream_port: int | None
    sync_standbys: frozenset[str]  # primary only: standbys streaming as sync/quorum


async def probe(host: str, port: int, password: str, timeout: float) -> Probe:
    """Raise on any failure (refused, timed out, auth): the caller counts it as a miss."""
    async with asyncio.timeout(timeout):
        conn = await asyncpg.connect(
            host=host, port=port, user="postgres", password=password, database="postgres",
            timeout=timeout, command_timeout=timeout,
            server_settings={"application_name": "leaderboard-operator"},
        )  # fmt: skip
        try:
            row = await conn.fetchrow(PROBE_SQL)
            assert row is not None
            standbys: frozenset[str] = frozenset()
            if not row["in_recovery"]:
                standbys = frozenset(
                    r["application_name"] for r in await conn.fetch(REPLICATION_SQL)
                )
        finally:
            conn.terminate()
    return Probe(
        in_recovery=row["in_recovery"],
        lsn=int(row["lsn"] or 0),
        timeline=int(row["timeline"] or 0),
        sync_names=row["sync_names"],
        upstream_port=row["upstream_port"],
        sync_standbys=standbys,
    )
