"""The Kubernetes shell of the failover operator (``leaderboard operator``, kopf).

Per ``PostgresCluster`` one kopf daemon runs the same loop as the local shell: observe (list
the cluster's pods, probe each over SQL), :func:`decide`, act, record. What differs is how the
actions are carried out and where the outcome is published:

- routing: the ``<cluster>-rw`` Service selects the pod labelled ``role=primary``, ``-ro`` the
  ``role=replica`` ones; the operator owns both Services and the labels. Taking the label off
  a primary is the first step of every fence, so routing moves before anything else;
- fencing: the old primary's pod is deleted at once (grace 0). Its StatefulSet recreates it
  and ``pg-member.sh`` (the same script the local stack uses) brings it back as a replica
  with pg_rewind. A node that keeps running a partitioned postgres cannot acknowledge writes
  either: no traffic reaches it, and its only synchronous standbys are re-pointed at once;
- replicas stream from the ``-rw`` Service, so re-pointing one is ending its walreceiver;
- a replica pod whose postgres container has not passed its startup probe (pg-member.sh may
  be rewinding or cloning it for minutes) is left to the kubelet, not fenced for not answering;
- ``<cluster>-app`` (Secret) holds the application's URI (host: the ``-rw`` Service);
- the CR's status (currentPrimary, targetPrimary, phase, failover count and time, members,
  conditions) and a Kubernetes Event for every decision that changed;
- one active operator per cluster: a Lease (:mod:`.lease`), not kopf peering.

The pods come from a StatefulSet (the chart's): stable names, a volume each, and a controller
that recreates a deleted pod, so the operator needs no right to create pods.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import asyncpg
import kopf
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import (
    EventSource,
    ObjectReference,
    ServicePort,
    ServiceSpec,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Event, Pod, Secret, Service
from lightkube.types import PatchType

from leaderboard.operator import metrics, provision
from leaderboard.operator.decide import (
    Action,
    Cluster,
    Decision,
    Member,
    decide,
    remember_candidates,
)
from leaderboard.operator.lease import LeaseLock
from leaderboard.operator.probe import Stalls, leaked_cancellation, probe

GROUP, VERSION, KIND, PLURAL = "leaderboard.dev", "v1", "PostgresCluster", "postgresclusters"
CLUSTER_LABEL = "leaderboard.dev/cluster"
ROLE_LABEL = "leaderboard.dev/role"
COMPONENT = "leaderboard-operator"
SYNC_STANDBYS = provision.SYNC_STANDBYS
PG_PORT = 5432

PostgresCluster = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)

log = logging.getLogger("leaderboard.operator")

Address = Callable[[Pod], "tuple[str, int] | None"]


def pod_address(pod: Pod) -> tuple[str, int] | None:
    """The pod IP and its container port named ``postgres`` (5432 if none is declared)."""
    ip = pod.status.podIP if pod.status else None
    ports = [p for c in (pod.spec.containers if pod.spec else []) for p in (c.ports or [])]
    port = next((p.containerPort for p in ports if p.name == "postgres"), PG_PORT)
    return (ip, port) if ip else None


def _started(pod: Pod) -> bool:
    """Whether the postgres container passed its startup probe (the kubelet says so)."""
    statuses = (pod.status.containerStatuses if pod.status else None) or []
    return any(s.name == "postgres" and s.started for s in statuses)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _labels(pod: Pod) -> dict[str, str]:
    return dict(pod.metadata.labels or {}) if pod.metadata else {}


def _name(pod: Pod) -> str:
    assert pod.metadata is not None and pod.metadata.name is not None
    return pod.metadata.name


class KubeOperator:
    """The loop for one PostgresCluster; :meth:`step` is one round (what the tests drive)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        address: Address = pod_address,
        lease_s: int = 15,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.address = address
        self.lock = LeaseLock(
            client, namespace=namespace, name=f"{name}-operator", identity=identity,
            duration_s=lease_s,
        )  # fmt: skip
        self.key = f"{namespace}/{name}"
        self.primary: str | None = None
        self.failovers = 0
        self.last_failover: str | None = None
        self.sync_candidates: frozenset[str] = frozenset()
        self.sync_streaming: frozenset[str] = frozenset()  # what the primary reports now
        self.failures: dict[str, int] = {}
        self.stalls = Stalls()
        self._rejoined_at: dict[str, float] = {}
        self._last_reason: str | None = None
        self._last_status: dict[str, Any] = {}
        self._password: str | None = None
        self._adopted = False
        self._provisioned = False  # the -rw/-ro Services, the app's role and its Secret
        self.standby_rounds = 0  # rounds in which another instance held the lease
        self.rounds = 0  # rounds it acted in (held the lease)

    # -- the loop

    async def run(self, stopped: Callable[[], bool], interval_s: float = 0.4) -> None:
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
            self.sync_candidates = frozenset(status.get("syncStandbys") or ())
            self.failovers = int(status.get("failoverCount") or 0)
            self.last_failover = status.get("lastFailover")
            self._adopted = True
            self._provisioned = False  # objects deleted by hand come back
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
        probe_spec = spec.get("probe", {})
        cluster = Cluster(
            members=tuple(members),
            primary=self.primary,
            sync_candidates=self.sync_candidates,
            sync_streaming=self.sync_streaming,
            durability=spec.get("durability", "required"),
            failure_threshold=int(probe_spec.get("failureThreshold", 3)),
            paused=bool(spec.get("paused", False)),
            switchover_to=spec.get("switchoverTo") or None,
        )
        metrics.observe(self.key, cluster)
        decision = decide(cluster)
        if decision.reason != self._last_reason:
            log.info("%s: %s", self.key, decision)
            metrics.decided(self.key, decision)
            await self._event(cr, _reason(decision.action), str(decision), warning=False)
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
            cluster = replace(cluster, members=tuple(members), primary=self.primary)
        await self._route(pods, cluster)
        await self._publish(spec, list(cluster.members), decision)
        return spec

    # -- observe

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
            [p async for p in found if _labels(p).get(CLUSTER_LABEL) == self.name],
            key=_name,
        )

    async def _superuser_password(self) -> str:
        if self._password is None:
            secret = await self.client.get(
                Secret, f"{self.name}-credentials", namespace=self.namespace
            )
            data = secret.data or {}
            self._password = base64.b64decode(data["superuser-password"]).decode()
        return self._password

    async def _observe(self, pods: list[Pod], spec: Mapping[str, Any]) -> list[Member]:
        password = await self._superuser_password()
        timeout = float(spec.get("probe", {}).get("timeoutSeconds", 1.0))
        names = frozenset(_name(pod) for pod in pods)

        async def one(pod: Pod) -> Member:
            name = _name(pod)
            running = pod.metadata is not None and pod.metadata.deletionTimestamp is None
            where = self.address(pod)
            try:
                if where is None:
                    raise OSError("no pod IP yet")
                seen = await probe(where[0], where[1], password, timeout)
            except Exception:  # refused, timed out, starting up: a missed probe
                if name != self.primary and not _started(pod):
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

    # -- bootstrap: the first member that answers as primary (pg-member.sh initdb'd it)

    async def _bootstrap(self, cr: Any, members: list[Member]) -> bool:
        primaries = [m for m in members if m.reachable and m.role == "primary"]
        if len(primaries) != 1:
            return False
        self.primary = primaries[0].name
        await self._event(cr, "Bootstrapped", f"{self.primary} is the primary", warning=False)
        return True

    async def _provision(self, cr: Any) -> None:
        """The -rw/-ro Services, the application's role and database and the -app Secret.
        Retried every round until done: a failure must not stop the round (a primary that
        died during it still has to be failed over)."""
        try:
            await self._ensure_services(cr)
            await self._ensure_app(cr)
        except (ApiError, OSError, asyncpg.PostgresError, TimeoutError, KeyError) as exc:
            log.warning("%s: provisioning failed (next round retries): %r", self.key, exc)
            return
        self._provisioned = True

    async def _finish_promotion(self, cr: Any, target: str, members: list[Member]) -> None:
        """The previous lease holder recorded ``targetPrimary`` before ``pg_promote`` and
        stopped before recording the outcome: if the target accepts writes, it is the primary
        (it holds every acknowledged write: it was chosen as the synchronous candidate)."""
        promoted = next((m for m in members if m.name == target), None)
        if promoted is None or not (promoted.reachable and promoted.role == "primary"):
            return
        self.primary = target
        self.failovers += 1
        self.last_failover = _now()
        metrics.promoted(self.key, "failover", time.time())
        await self._status(
            {"currentPrimary": target, "failoverCount": self.failovers,
             "lastFailover": self.last_failover},
        )  # fmt: skip
        await self._event(
            cr, "Promoted", f"{target} is the primary (a promotion the previous operator "
            "instance did not finish recording)", warning=True,
        )  # fmt: skip

    async def _ensure_services(self, cr: Any) -> None:
        for suffix, role in (("rw", "primary"), ("ro", "replica")):
            selector = {CLUSTER_LABEL: self.name, ROLE_LABEL: role}
            service = Service(
                metadata=self._owned(cr, f"{self.name}-{suffix}"),
                spec=ServiceSpec(
                    selector=selector,
                    ports=[ServicePort(name="postgres", port=PG_PORT, targetPort=PG_PORT)],
                ),
            )
            await self._create_or_patch(Service, service, {"spec": {"selector": selector}})

    async def _ensure_app(self, cr: Any) -> None:
        """The application's role, database and ``<cluster>-app`` Secret (its URI)."""
        creds = await self.client.get(Secret, f"{self.name}-credentials", namespace=self.namespace)
        data = {k: base64.b64decode(v).decode() for k, v in (creds.data or {}).items()}
        user = data.get("app-username", "leaderboard")
        database = data.get("app-database", "leaderboard")
        password = data["app-password"]
        await self._sql(self.primary, provision.role_sql(user, password))
        if not await self._sql(self.primary, provision.database_exists_sql(database)):
            await self._sql(self.primary, provision.create_database_sql(database, user))
        strings = provision.app_secret(self.name, self.namespace, user, password, database)
        secret = Secret(metadata=self._owned(cr, f"{self.name}-app"), stringData=strings)
        await self._create_or_patch(Secret, secret, {"stringData": strings})

    def _owned(self, cr: Any, name: str) -> ObjectMeta:
        return ObjectMeta(
            name=name,
            namespace=self.namespace,
            labels={CLUSTER_LABEL: self.name, "app.kubernetes.io/managed-by": COMPONENT},
            ownerReferences=[
                OwnerReference(
                    apiVersion=f"{GROUP}/{VERSION}",
                    kind=KIND,
                    name=self.name,
                    uid=cr.metadata.uid or "",
                    controller=True,
                    blockOwnerDeletion=True,
                )
            ],
        )

    async def _create_or_patch(self, res: Any, obj: Any, patch: dict[str, Any]) -> None:
        try:
            await self.client.create(obj)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            await self.client.patch(
                res, obj.metadata.name, patch, namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )  # fmt: skip

    # -- act

    async def _act(self, cr: Any, decision: Decision, pods: list[Pod], cluster: Cluster) -> None:
        target = decision.target
        assert target is not None
        if decision.action is Action.PROMOTE:
            await self._promote(cr, target, decision.old_primary, cluster)
        elif decision.action is Action.FENCE:
            await self._fence(cr, target, pods)
        elif decision.action is Action.REJOIN:
            await self._rejoin(cr, target, pods)
        elif decision.action is Action.REPOINT:
            await self._repoint(target)
        elif decision.action is Action.ENABLE_SYNC:
            await self._set_sync(target, SYNC_STANDBYS)
        elif decision.action is Action.SWITCHOVER:
            assert decision.old_primary is not None
            await self._switchover(cr, target, decision.old_primary, pods, cluster)

    async def _fence(self, cr: Any, name: str, pods: list[Pod]) -> None:
        """Routing first (the label), then the pod itself, with no grace."""
        if not any(_name(p) == name for p in pods):
            return
        await self._label(name, None)
        try:
            await self.client.delete(Pod, name, namespace=self.namespace, grace_period=0)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        await self._event(cr, "Fenced", f"{name}: role label removed, pod deleted", warning=True)

    async def _promote(
        self, cr: Any, name: str, old: str | None, cluster: Cluster, kind: str | None = None
    ) -> None:
        pods = await self._pods()
        if old is not None:
            await self._fence(cr, old, pods)
        await self._status({"targetPrimary": name, "phase": "FailingOver"})
        promoted = await self._sql(name, "SELECT pg_promote(true, 30)", timeout=35)
        if not promoted or not promoted[0][0]:
            raise RuntimeError(f"pg_promote on {name} did not finish")
        # A promoted node inherits the old list; say explicitly what it must wait for.
        await self._set_sync(name, SYNC_STANDBYS if cluster.durability == "required" else "")
        await self._sql(name, "CHECKPOINT", timeout=30)  # so the old primary can pg_rewind
        previous, self.primary = self.primary, name
        self.sync_candidates = frozenset()
        self.failures = {}
        self.stalls.reset()
        await self._label(name, "primary")
        kind = kind or ("failover" if old is not None else "restart")
        if previous != name:
            self.failovers += 1
            self.last_failover = _now()
            metrics.promoted(self.key, kind, time.time())
        await self._status(
            {
                "currentPrimary": name, "targetPrimary": name,
                "failoverCount": self.failovers, "lastFailover": self.last_failover,
            }
        )  # fmt: skip
        await self._event(cr, "Promoted", f"{name} is the primary ({kind})", warning=True)
        for other in cluster.members:
            if other.name not in (name, old) and other.reachable:
                try:
                    await self._repoint(other.name)
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    await self._event(cr, "ActionFailed", f"re-point {other.name}: {exc}", True)

    async def _switchover(
        self, cr: Any, name: str, old: str, pods: list[Pod], cluster: Cluster
    ) -> None:
        """Planned, without loss: stop routing to the primary, make it read-only and end its
        sessions, wait until the target has received all of its WAL, then promote."""
        await self._status({"targetPrimary": name, "phase": "Switchover"})
        await self._label(old, None)
        await self._sql(old, "ALTER SYSTEM SET default_transaction_read_only = on")
        await self._sql(old, "SELECT pg_reload_conf()")
        await self._sql(
            old,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        rows = await self._sql(old, "SELECT pg_current_wal_flush_lsn()::text")
        last = _lsn(rows[0][0])
        deadline = time.monotonic() + 30
        while True:
            got = await self._sql(name, "SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')::text")
            if _lsn(got[0][0]) >= last:
                break
            if time.monotonic() > deadline:
                await self._sql(old, "ALTER SYSTEM RESET default_transaction_read_only")
                await self._sql(old, "SELECT pg_reload_conf()")
                await self._label(old, "primary")
                raise RuntimeError(f"{name} did not receive {old}'s last WAL; switchover aborted")
            await asyncio.sleep(0.05)
        await self._sql(old, "ALTER SYSTEM RESET default_transaction_read_only")
        await self._promote(cr, name, old, cluster, kind="switchover")
        await self._event(cr, "SwitchedOver", f"planned switchover from {old} to {name}", False)
        # Clearing the request is the last step: whoever waits for it finds the rest recorded.
        await self.client.patch(
            PostgresCluster, self.name, {"spec": {"switchoverTo": None}},
            namespace=self.namespace, patch_type=PatchType.MERGE,
        )  # fmt: skip

    async def _rejoin(self, cr: Any, name: str, pods: list[Pod]) -> None:
        """Restart it; pg-member.sh rewinds it onto the primary. At most every 30 s."""
        if time.monotonic() - self._rejoined_at.get(name, -1e9) < 30:
            return
        self._rejoined_at[name] = time.monotonic()
        assert self.primary is not None
        await self._sql(self.primary, "CHECKPOINT", timeout=30)
        if any(_name(p) == name for p in pods):
            await self._label(name, None)
            await self.client.delete(Pod, name, namespace=self.namespace)
            how = "pod deleted; it restarts as a replica (pg_rewind)"
        else:
            how = "waiting for its StatefulSet to recreate the pod"
        self.stalls.reset(name)
        await self._event(cr, "Rejoining", f"{name}: {how}", warning=False)

    async def _repoint(self, name: str) -> None:
        """Replicas stream from the -rw Service: a new walreceiver connects to the primary."""
        await self._sql(
            name,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'walreceiver'",
        )

    async def _set_sync(self, name: str, value: str) -> None:
        await self._sql(name, provision.sync_standbys_sql(value))
        await self._sql(name, "SELECT pg_reload_conf()")

    # -- routing, status, events

    async def _route(self, pods: list[Pod], cluster: Cluster) -> None:
        """The role label each pod should carry: the primary keeps its label through a few
        missed probes (a slow probe never moves routing); an unanswering replica loses it."""
        for pod in pods:
            name = _name(pod)
            member = cluster.member(name)
            want: str | None = None
            if member is not None and name == self.primary:
                if (member.reachable and member.role == "primary") or (
                    not member.reachable and member.failed_probes < cluster.failure_threshold
                ):
                    want = "primary"
            elif member is not None and member.reachable and member.role == "replica":
                want = "replica"
            if _labels(pod).get(ROLE_LABEL) != want:
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
            elif self.sync_streaming and len(streaming) == len(members) - 1:
                phase = "Healthy"
            else:
                phase = "Degraded"
        conditions = [
            self._condition(
                "Ready", writable, "PrimaryWritable" if writable else "NoWritablePrimary",
                f"{self.primary} accepts writes" if writable else "no member accepts writes",
            ),
            self._condition(
                "SynchronousStandby", bool(self.sync_streaming),
                "Streaming" if self.sync_streaming else "Missing",
                ", ".join(sorted(self.sync_streaming)) or
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
            "syncStandbys": sorted(self.sync_candidates),
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
        await self._status(status)

    def _condition(self, kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
        value = "True" if ok else "False"
        before = next(
            (c for c in self._last_status.get("conditions", []) if c["type"] == kind), None
        )
        since = before["lastTransitionTime"] if before and before["status"] == value else _now()
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
        now = _now()
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

    # -- SQL on one member

    async def _sql(self, member: str | None, query: str, timeout: float = 5.0) -> list[Any]:
        assert member is not None
        pod = await self.client.get(Pod, member, namespace=self.namespace)
        where = self.address(pod)
        if where is None:
            raise OSError(f"{member} has no address")
        conn = await asyncpg.connect(
            host=where[0], port=where[1], user="postgres",
            password=await self._superuser_password(), database="postgres",
            timeout=timeout, command_timeout=timeout,
            server_settings={"application_name": COMPONENT},
        )  # fmt: skip
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()


def _reason(action: Action) -> str:
    return "".join(part.capitalize() for part in action.value.split("-")) or "None"


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


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
