"""Observe: the cluster's pods, each probed over SQL, as the members :func:`decide` reads."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Pod

from leaderboard.operator.decide import Member
from leaderboard.operator.kube.shell import CLUSTER_LABEL, Shell, labels_of, name_of, started
from leaderboard.operator.probe import probe

REVISION_LABEL = "controller-revision-hash"  # set by the StatefulSet controller on each pod


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
            # A terminating pod's postgres may still run (its preStop hook holds a primary's
            # shutdown so that it can be switched over): not gone, but leaving.
            terminating = pod.metadata is not None and pod.metadata.deletionTimestamp is not None
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
                return self.observed.missed(
                    name, running=True, terminating=terminating, counted=not starting
                )
            # Replicas stream from the -rw Service, which only ever selects the primary.
            return self.observed.answered(
                name, seen, primary=self.primary, members=names, upstream=self.primary,
                running=True, terminating=terminating,
            )  # fmt: skip

        return list(await asyncio.gather(*(one(p) for p in pods)))

    async def _revisions(self, pods: list[Pod]) -> tuple[frozenset[str], int]:
        """The members whose pod does not run the StatefulSet's update revision (a rollout
        the operator carries out, under ``OnDelete``), and how many pods it should have.
        Nothing is outdated under another strategy: its controller rolls the pods then."""
        try:
            sts = await self.client.get(StatefulSet, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:  # not made by the chart: no rollout to drive
                return frozenset(), 0
            raise
        spec, status = sts.spec, sts.status
        expected = int(spec.replicas or 0) if spec else 0
        strategy = spec.updateStrategy.type if spec and spec.updateStrategy else None
        revision = status.updateRevision if status else None
        if strategy != "OnDelete" or not revision:
            return frozenset(), expected
        outdated = (name_of(p) for p in pods if labels_of(p).get(REVISION_LABEL) != revision)
        return frozenset(outdated), expected
