"""Observe: the cluster's pods, each probed over SQL, as the members :func:`decide` reads."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lightkube.resources.core_v1 import Pod

from leaderboard.operator.decide import (
    Member,
    remember_candidates,
)
from leaderboard.operator.kubeshell import CLUSTER_LABEL, Shell, labels_of, name_of, started
from leaderboard.operator.probe import probe


class Observe(Shell):
    def _count_missing_primary(self, members: list[Member]) -> None:
        """A primary whose pod is gone (deleted, node lost) is a member that does not answer."""
        if self.primary is not None and self.primary not in {m.name for m in members}:
            failed = self.failures[self.primary] = self.failures.get(self.primary, 0) + 1
            members.append(
                Member(self.primary, reachable=False, failed_probes=failed, running=False)
            )

    async def _pods(self) -> list[Pod]:
        # Filter here too: a selector is a request, and kmock (the tests) ignores it.
        found = self.client.list(Pod, namespace=self.namespace, labels={CLUSTER_LABEL: self.name})
        return sorted(
            [p async for p in found if labels_of(p).get(CLUSTER_LABEL) == self.name],
            key=name_of,
        )

    async def _observe(self, pods: list[Pod], spec: Mapping[str, Any]) -> list[Member]:
        password = await self._superuser_password()
        timeout = float(spec.get("probe", {}).get("timeoutSeconds", 1.0))
        names = frozenset(name_of(pod) for pod in pods)

        async def one(pod: Pod) -> Member:
            name = name_of(pod)
            running = pod.metadata is not None and pod.metadata.deletionTimestamp is None
            where = self.address(pod)
            try:
                if where is None:
                    raise OSError("no pod IP yet")
                seen = await probe(where[0], where[1], password, timeout, tls=self._tls)
            except Exception:  # refused, timed out, starting up: a missed probe
                if name != self.primary and not started(pod):
                    # pg-member.sh may spend minutes in pg_rewind or pg_basebackup before
                    # postgres listens; until its startup probe passes the kubelet owns the
                    # container. Counting misses here would fence (delete) it again and again.
                    self.failures[name] = 0
                    return Member(name, reachable=False, running=running)
                self.failures[name] = self.failures.get(name, 0) + 1
                return Member(
                    name, reachable=False, failed_probes=self.failures[name], running=running
                )
            self.failures[name] = 0
            streaming = seen.upstream_port is not None
            stalled = self.stalls.see(name, seen)
            if not seen.in_recovery and name == self.primary:
                self.sync_streaming = seen.sync_standbys
                self.sync_candidates = remember_candidates(
                    self.sync_candidates, seen.sync_standbys, names
                )
            return Member(
                name,
                reachable=True,
                role="replica" if seen.in_recovery else "primary",
                lsn=seen.lsn,
                timeline=seen.timeline,
                # Replicas stream from the -rw Service, which only ever selects the primary.
                upstream=self.primary if streaming else None,
                running=running,
                sync_standbys_enabled=bool(seen.sync_names.strip()),
                stalled_probes=stalled,
            )

        return list(await asyncio.gather(*(one(p) for p in pods)))
