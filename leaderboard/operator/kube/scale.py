"""Scale: ``spec.instances`` carried out on the members' StatefulSet (the decision, in
:func:`~leaderboard.operator.planned.scale`, has already moved the primary off a leaving pod)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lightkube.resources.apps_v1 import StatefulSet
from lightkube.types import PatchType

from leaderboard.db.sql import ident
from leaderboard.operator import provision
from leaderboard.operator.kube.publish import Publish
from leaderboard.operator.kube.shell import SYNC_STANDBYS, parse_lsn
from leaderboard.operator.planned import leaving
from leaderboard.operator.state import Cluster, Decision

CATCH_UP_S = 10.0


class Scale(Publish):
    async def _scale(self, cr: Any, decision: Decision, cluster: Cluster) -> None:
        """Up: any standby may acknowledge again (``ANY 1 (*)``, so the new ones count), then
        more replicas. Down: first only the staying standbys may acknowledge a commit, and
        one of them has everything the primary wrote until then; only then the pods go. With
        ``ANY 1 (*)`` a commit acknowledged by a leaving standby alone would be lost to the
        next failover once that standby is gone."""
        assert self.primary is not None
        if decision.instances > cluster.expected_members:
            await self._sync_names(SYNC_STANDBYS)
        else:
            gone = set(leaving(cluster))
            staying = sorted(m.name for m in cluster.members if m.name not in gone)
            staying.remove(self.primary)
            await self._sync_names(f"ANY 1 ({', '.join(ident(n) for n in staying)})")
            await self._caught_up(staying)
            self.observed.sync_candidates -= gone
        await self.client.patch(
            StatefulSet, self.name, {"spec": {"replicas": decision.instances}},
            namespace=self.namespace, patch_type=PatchType.MERGE,
        )  # fmt: skip
        await self._event(cr, "Scaled", str(decision), warning=False)

    async def _sync_names(self, value: str) -> None:
        await self._sql(self.primary, provision.sync_standbys_sql(value))
        await self._sql(self.primary, "SELECT pg_reload_conf()")

    async def _caught_up(self, staying: list[str]) -> None:
        """Until a staying standby has flushed what the primary has written so far (so every
        commit acknowledged before is on a member that stays)."""
        rows = await self._sql(self.primary, "SELECT pg_current_wal_lsn()::text")
        target = parse_lsn(rows[0][0])
        deadline = time.monotonic() + CATCH_UP_S
        while True:
            rows = await self._sql(
                self.primary,
                "SELECT application_name, flush_lsn::text FROM pg_stat_replication "
                "WHERE flush_lsn IS NOT NULL",
            )
            if any(r[0] in staying and parse_lsn(r[1]) >= target for r in rows):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no staying standby caught up within {CATCH_UP_S:.0f} s")
            await asyncio.sleep(0.05)
