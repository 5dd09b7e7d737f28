"""The loop of one PostgresCluster (:class:`KubeOperator`: observe, decide, act, publish)
and its kopf registration; the package's face (:mod:`leaderboard.operator.kube`) says what
the Kubernetes shell does."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import asyncpg
import kopf
from lightkube import ApiError, AsyncClient, KubeConfig

from leaderboard.operator import metrics
from leaderboard.operator.decide import (
    Action,
    Cluster,
    decide,
)
from leaderboard.operator.kube.act import Act
from leaderboard.operator.kube.shell import (
    CLUSTER_LABEL,
    GROUP,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    PostgresCluster,
    event_reason,
    log,
    pod_address,
)
from leaderboard.operator.probe import leaked_cancellation

__all__ = [
    "CLUSTER_LABEL", "ROLE_LABEL", "KubeOperator", "PostgresCluster", "pod_address", "register",
]  # fmt: skip


class KubeOperator(Act):
    """The loop for one PostgresCluster; :meth:`step` is one round (what the tests drive).
    Observing, acting and publishing are its parts (kubeobserve, kubeact, kubepublish)."""

    # -- the loop

    async def run(self, stopped: Callable[[], bool], interval_s: float = 0.4) -> None:
        metrics.start(self.key)
        try:
            while not stopped():
                started = time.monotonic()
                spec: Mapping[str, Any] = {}
                try:
                    spec = await self.step()
                except Exception as exc:  # API or network trouble: the next round retries
                    log.warning("%s: round failed: %r", self.key, exc)
                except asyncio.CancelledError:
                    if not leaked_cancellation():  # only a cancellation of this task ends it
                        raise
                    log.warning("%s: round failed: a stray CancelledError", self.key)
                interval = float(spec.get("probe", {}).get("intervalSeconds", interval_s))
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            await self.lock.release()
            metrics.LEADER.labels(self.key).set(0)

    async def step(self) -> Mapping[str, Any]:
        """One round; returns the spec it worked from. Does nothing without the lease."""
        if not await self.lock.hold():
            self.standby_rounds += 1
            metrics.LEADER.labels(self.key).set(0)
            self._adopted = False  # another instance acts; start over from its status later
            return {}
        metrics.LEADER.labels(self.key).set(1)
        self.rounds += 1
        cr = await self.client.get(PostgresCluster, self.name, namespace=self.namespace)
        spec: Mapping[str, Any] = cr.get("spec") or {}
        status: Mapping[str, Any] = cr.get("status") or {}
        if not self._adopted:  # carry on from what the previous holder recorded
            self.primary = status.get("currentPrimary") or None
            self.observed.sync_candidates = frozenset(status.get("syncStandbys") or ())
            self.failovers = int(status.get("failoverCount") or 0)
            self.last_failover = status.get("lastFailover")
            self._adopted = True
            self._provisioned = False  # objects deleted by hand come back
        await self._load_tls(spec)
        pods = await self._pods()
        members = await self._observe(pods, spec)
        if self.primary is None and not await self._bootstrap(cr, members):
            await self._publish(spec, members, None, phase="Bootstrapping")
            return spec
        assert self.primary is not None
        answered = any(m.name == self.primary and m.role == "primary" for m in members)
        if not self._provisioned and answered:  # (its SQL would wait on a dead primary)
            await self._provision(cr)
        target = status.get("targetPrimary")
        if target and target != self.primary:
            await self._finish_promotion(cr, target, members)
        self._count_missing_primary(members)
        outdated, expected = await self._revisions(pods)
        probe_spec = spec.get("probe", {})
        cluster = Cluster(
            members=tuple(members),
            primary=self.primary,
            sync_candidates=self.observed.sync_candidates,
            sync_streaming=self.observed.sync_streaming,
            durability=spec.get("durability", "required"),
            failure_threshold=int(probe_spec.get("failureThreshold", 3)),
            paused=bool(spec.get("paused", False)),
            switchover_to=spec.get("switchoverTo") or None,
            outdated=outdated,
            expected_members=expected,
            instances=int(spec.get("instances") or 0),
        )
        metrics.observe(self.key, cluster)
        metrics.archiving(self.key, self.observed.archiver)
        decision = decide(cluster)
        if decision.reason != self._last_reason:
            log.info("%s: %s", self.key, decision)
            metrics.decided(self.key, decision)
            await self._event(cr, event_reason(decision.action), str(decision), warning=False)
            for note in decision.notes:
                await self._event(cr, "DataLoss", note, warning=True)
            self._last_reason = decision.reason
        if decision.action is not Action.NONE:
            try:
                await self._act(cr, decision, pods, cluster)
            except (ApiError, OSError, asyncpg.PostgresError, TimeoutError, RuntimeError) as exc:
                log.warning("%s: %s failed: %s", self.key, decision.action.value, exc)
                await self._event(cr, "ActionFailed", f"{decision}: {exc}", warning=True)
                self._last_reason = None  # say it again next round
            # Route and report what the action made of the cluster (a promoted replica is
            # the primary now), not what was seen before it: a stale view would take the
            # new primary's label away until the next round.
            pods = await self._pods()
            members = await self._observe(pods, spec)
            self._count_missing_primary(members)
            outdated, _ = await self._revisions(pods)
            cluster = replace(cluster, members=tuple(members), primary=self.primary)
        await self._route(pods, cluster)
        await self._publish(spec, list(cluster.members), decision, outdated=outdated)
        try:
            await self._reload_renewed_certificates(cr, list(cluster.members))
        except (ApiError, OSError, KeyError) as exc:  # never worth a failed round
            log.warning("%s: certificate check failed: %r", self.key, exc)
        return spec


# -- kopf


def register(registry: kopf.OperatorRegistry) -> None:
    """The handlers, on a given registry (the tests run two operators in one process)."""

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.peering.standalone = True  # the Lease decides who acts, not kopf peering
        settings.posting.enabled = False  # our own Events, one per decision
        settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching: less RBAC
        if "client" not in memo:
            memo.client = AsyncClient(KubeConfig.from_env())
        if "identity" not in memo:
            memo.identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        if "address" not in memo:
            memo.address = pod_address
        if "operators" not in memo:
            memo.operators = []  # the running loops, one per PostgresCluster

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)
    async def supervise(
        name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, **_: Any
    ) -> None:
        assert namespace is not None  # PostgresCluster is namespaced
        operator = KubeOperator(
            memo.client, namespace=namespace, name=name, identity=memo.identity,
            address=memo.address,
        )  # fmt: skip
        memo.operators.append(operator)
        try:
            await operator.run(lambda: bool(stopped))
        finally:
            memo.operators.remove(operator)


# `kopf run -m leaderboard.operator.kube` and `leaderboard operator` both use this registry.
register(kopf.get_default_registry())
