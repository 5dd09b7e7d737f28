"""Observe: the cluster's pods, each probed over SQL, as the members :func:`decide` reads."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lightkube.resources.core_v1 import Pod

from leaderboard.operator.decide import Member
from leaderboard.operator.kube.shell import CLUSTER_LABEL, Shell, labels_of, name_of, started
from leaderboard.operator.probe import probe


class Observe(Shell):
    def _count_missing_primary(self, members: list[Member]) -> None:
        """A primary whose pod is gone (deleted, node lost) is a member that does not answer."""
        if self.primary is not None and self.primary not in {m.name for m in members}:
            members.append(self.observed.gone(self.primary))

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
                # pg-member.sh may spend minutes in pg_rewind or pg_basebackup before
                # postgres listens; until its startup probe passes the kubelet owns the
                # container. Counting misses here would fence (delete) it again and again.
                starting = name != self.primary and not started(pod)
                return self.observed.missed(name, running=running, counted=not starting)
            # Replicas stream from the -rw Service, which only ever selects the primary.
            return self.observed.answered(
                name, seen, primary=self.primary, members=names, upstream=self.primary,
                running=running,
            )  # fmt: skip

        return list(await asyncio.gather(*(one(p) for p in pods)))
