"""Publish: routing (the role labels the -rw/-ro Services select), the CR's status and
conditions, and one Kubernetes Event per decision."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError
from lightkube.models.core_v1 import (
    EventSource,
    ObjectReference,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from leaderboard.operator.decide import (
    Action,
    Cluster,
    Decision,
    Member,
)
from leaderboard.operator.kube.shell import (
    COMPONENT,
    GROUP,
    KIND,
    ROLE_LABEL,
    VERSION,
    PostgresCluster,
    Shell,
    labels_of,
    log,
    name_of,
    utc_now,
)


class Publish(Shell):
    async def _route(self, pods: list[Pod], cluster: Cluster) -> None:
        """The role label each pod should carry: the primary keeps its label through a few
        missed probes (a slow probe never moves routing); an unanswering replica loses it."""
        for pod in pods:
            name = name_of(pod)
            member = cluster.member(name)
            want: str | None = None
            if member is not None and name == self.primary:
                if (member.reachable and member.role == "primary") or (
                    not member.reachable and member.failed_probes < cluster.failure_threshold
                ):
                    want = "primary"
            elif member is not None and member.reachable and member.role == "replica":
                want = "replica"
            if labels_of(pod).get(ROLE_LABEL) != want:
                await self._label(name, want)

    async def _label(self, name: str, role: str | None) -> None:
        try:
            await self.client.patch(
                Pod, name, {"metadata": {"labels": {ROLE_LABEL: role}}},
                namespace=self.namespace, patch_type=PatchType.MERGE,
            )  # fmt: skip
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def _publish(
        self,
        spec: Mapping[str, Any],
        members: list[Member],
        decision: Decision | None,
        *,
        phase: str | None = None,
        outdated: frozenset[str] = frozenset(),
    ) -> None:
        primary = next((m for m in members if m.name == self.primary), None)
        writable = primary is not None and primary.reachable and primary.role == "primary"
        streaming = [m.name for m in members if m.role == "replica" and m.upstream is not None]
        durability = spec.get("durability", "required")
        if phase is None:
            if spec.get("paused"):
                phase = "Paused"
            elif not writable:
                phase = "Unavailable"
            elif self.observed.sync_streaming and len(streaming) == len(members) - 1:
                phase = "Healthy"
            else:
                phase = "Degraded"
        conditions = [
            self._condition(
                "Ready", writable, "PrimaryWritable" if writable else "NoWritablePrimary",
                f"{self.primary} accepts writes" if writable else "no member accepts writes",
            ),
            self._condition(
                "SynchronousStandby", bool(self.observed.sync_streaming),
                "Streaming" if self.observed.sync_streaming else "Missing",
                ", ".join(sorted(self.observed.sync_streaming)) or
                ("writes wait for a standby" if durability == "required"
                 else "writes are not replicated synchronously"),
            ),
        ]  # fmt: skip
        status: dict[str, Any] = {
            "currentPrimary": self.primary,
            "targetPrimary": self.primary,
            "phase": phase,
            "failoverCount": self.failovers,
            "lastFailover": self.last_failover,
            "durability": durability,
            "syncStandbys": sorted(self.observed.sync_candidates),
            "members": [
                {
                    "name": m.name,
                    "role": m.role if m.reachable and m.role else "down",
                    "streaming": m.upstream is not None,
                }
                for m in members
            ],
            "conditions": conditions,
            "leader": self.identity,
        }
        if decision is not None:
            status["lastDecision"] = str(decision)
            # Rolling: a replica restarts or the primary moves; Waiting: a member is not back
            # (the decision says which), the rollout holds there.
            rolling = "Rolling" if decision.action is not Action.NONE else "Waiting"
            status["rollout"] = {
                "phase": rolling if outdated else "Complete", "outdated": sorted(outdated),
            }  # fmt: skip
        await self._status(status)

    def _condition(self, kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
        value = "True" if ok else "False"
        before = next(
            (c for c in self._last_status.get("conditions", []) if c["type"] == kind), None
        )
        since = before["lastTransitionTime"] if before and before["status"] == value else utc_now()
        return {
            "type": kind, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since,
        }  # fmt: skip

    async def _status(self, change: dict[str, Any]) -> None:
        merged = {**self._last_status, **change}
        if merged == self._last_status:
            return  # nothing new: no API write
        await self.client.patch(
            PostgresCluster.Status, self.name, {"status": change},
            namespace=self.namespace, patch_type=PatchType.MERGE,
        )  # fmt: skip
        self._last_status = merged

    async def _event(self, cr: Any, reason: str, message: str, warning: bool) -> None:
        now = utc_now()
        event = Event(
            # Named, not generateName'd: unique per operator instance and moment.
            metadata=ObjectMeta(name=f"{self.name}.{time.time_ns():x}", namespace=self.namespace),
            involvedObject=ObjectReference(
                apiVersion=f"{GROUP}/{VERSION}",
                kind=KIND,
                name=self.name,
                namespace=self.namespace,
                uid=cr.metadata.uid,
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=EventSource(component=COMPONENT),
            reportingComponent=f"{GROUP}/operator",
            reportingInstance=self.identity,
            firstTimestamp=now,  # type: ignore[arg-type]
            lastTimestamp=now,  # type: ignore[arg-type]
            count=1,
        )
        try:
            await self.client.create(event)
        except ApiError as exc:  # an event lost is not worth a failed round
            log.warning("%s: event %s not recorded: %s", self.key, reason, exc)
