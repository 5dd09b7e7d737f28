"""Act: bootstrap and provisioning, then what a decision asks for (fence, promote, switch
over, rejoin, re-point, synchronous standbys), carried out through the API and SQL."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import asyncpg
from lightkube import ApiError
from lightkube.models.core_v1 import (
    ServicePort,
    ServiceSpec,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod, Secret, Service
from lightkube.types import PatchType

from leaderboard.db.sql import literal
from leaderboard.operator import metrics, provision
from leaderboard.operator.decide import (
    Action,
    Cluster,
    Decision,
    Member,
)
from leaderboard.operator.kube.certs import Certs
from leaderboard.operator.kube.observe import Observe
from leaderboard.operator.kube.scale import Scale
from leaderboard.operator.kube.shell import (
    CLUSTER_LABEL,
    COMPONENT,
    GROUP,
    KIND,
    PG_PORT,
    ROLE_LABEL,
    SYNC_STANDBYS,
    VERSION,
    PostgresCluster,
    log,
    name_of,
    parse_lsn,
    utc_now,
)


class Act(Observe, Scale, Certs):
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
        self.last_failover = utc_now()
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
        strings = provision.app_secret(
            self.name, self.namespace, user, password, database, tls=self._tls is not None
        )
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
        if decision.action is Action.SCALE:  # the StatefulSet, no one member
            await self._scale(cr, decision, cluster)
            return
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
        elif decision.action is Action.ROLL_REPLICA:
            await self._roll(cr, target, decision)
        elif decision.action is Action.SWITCHOVER:
            assert decision.old_primary is not None
            await self._switchover(cr, target, decision.old_primary, pods, cluster)
        # Action.RESTART: nothing to do here; the StatefulSet recreates a pod that is gone and
        # the kubelet restarts a container that exited, as a standby (pg-member.sh).

    async def _fence(self, cr: Any, name: str, pods: list[Pod]) -> None:
        """Routing first (the label), then the pod itself, with no grace."""
        if not any(name_of(p) == name for p in pods):
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
        detached: dict[str, str] = {}
        if old is not None:
            await self._fence(cr, old, pods)
            detached = await self._detach_standbys(cluster, old)
            name = await self._best_detached(cr, name, detached, cluster)
        await self._status({"targetPrimary": name, "phase": "FailingOver"})
        promoted = await self._sql(name, "SELECT pg_promote(true, 30)", timeout=35)
        if not promoted or not promoted[0][0]:
            raise RuntimeError(f"pg_promote on {name} did not finish")
        # A promoted node inherits the old list; say explicitly what it must wait for.
        await self._set_sync(name, SYNC_STANDBYS if cluster.durability == "required" else "")
        await self._sql(name, "CHECKPOINT", timeout=30)  # so the old primary can pg_rewind
        previous, self.primary = self.primary, name
        self.observed.promoted()
        await self._label(name, "primary")
        kind = kind or ("failover" if old is not None else "restart")
        if previous != name:
            self.failovers += 1
            self.last_failover = utc_now()
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
                    if detached.get(other.name):  # its next connection goes to the new primary
                        await self._alter_conninfo(other.name, detached[other.name])
                        self.saved_conninfo.pop(other.name, None)
                    else:
                        await self._repoint(other.name)
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    await self._event(cr, "ActionFailed", f"re-point {other.name}: {exc}", True)

    # -- detaching the standbys from a primary that may still run

    async def _detach_standbys(self, cluster: Cluster, old: str) -> dict[str, str]:
        """Stop replication from the old primary on every replica that answers, and return
        their ``primary_conninfo`` to restore afterwards.

        Deleting the old primary's pod does not stop its postgres when its node is cut off
        (a partition, a kubelet that cannot be reached), and its clients may still reach it,
        directly or on connections opened before the -rw Service moved. As long as one
        standby streams from it, it acknowledges their writes, and those the new primary did
        not receive would be lost. With ``primary_conninfo`` empty a standby's walreceiver
        stops and does not come back (routing may lag, but this does not depend on it): the
        old primary can no longer acknowledge anything, and the standbys' received positions
        stop moving, so the new primary is chosen on final figures."""
        detached: dict[str, str] = {}
        for member in cluster.members:
            if member.name == old or not (member.reachable and member.role == "replica"):
                continue
            try:
                rows = await self._sql(member.name, "SELECT current_setting('primary_conninfo')")
                if rows[0][0]:  # a retry after a failed promotion finds it empty already
                    self.saved_conninfo[member.name] = str(rows[0][0])
                await self._alter_conninfo(member.name, "")
                detached[member.name] = self.saved_conninfo.get(member.name, "")
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("%s: could not detach %s from %s: %s", self.key, member.name, old, exc)
        deadline = time.monotonic() + 5.0
        for name in detached:  # the walreceiver exits on the reload: wait until it has
            while time.monotonic() < deadline:
                rows = await self._sql(name, "SELECT count(*) FROM pg_stat_wal_receiver")
                if not rows[0][0]:
                    break
                await asyncio.sleep(0.05)
        return detached

    async def _best_detached(
        self, cr: Any, chosen: str, detached: dict[str, str], cluster: Cluster
    ) -> str:
        """The decision's target, unless another candidate received more while the old
        primary went on streaming after the probes that chose it."""
        allowed = cluster.sync_candidates if cluster.durability == "required" else None
        received: dict[str, int] = {}
        for name in detached:
            if allowed is not None and name not in allowed:
                continue
            rows = await self._sql(name, "SELECT pg_last_wal_receive_lsn()::text")
            received[name] = parse_lsn(rows[0][0]) if rows and rows[0][0] else 0
        if not received or chosen not in received:
            return chosen
        best = max(received, key=lambda n: (received[n], n == chosen))
        if best != chosen:
            await self._event(
                cr, "Promote", f"promoting {best} instead of {chosen}: it received more "
                f"({received[best]:X} > {received[chosen]:X}) after the decision", warning=True,
            )  # fmt: skip
        return best

    async def _alter_conninfo(self, name: str, conninfo: str) -> None:
        await self._sql(name, f"ALTER SYSTEM SET primary_conninfo = {literal(conninfo)}")
        await self._sql(name, "SELECT pg_reload_conf()")

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
        last = parse_lsn(rows[0][0])
        deadline = time.monotonic() + 30
        while True:
            got = await self._sql(name, "SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')::text")
            if parse_lsn(got[0][0]) >= last:
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
        if any(name_of(p) == name for p in pods):
            await self._label(name, None)
            await self.client.delete(Pod, name, namespace=self.namespace)
            how = "pod deleted; it restarts as a replica (pg_rewind)"
        else:
            how = "waiting for its StatefulSet to recreate the pod"
        self.observed.stalls.reset(name)
        await self._event(cr, "Rejoining", f"{name}: {how}", warning=False)

    async def _roll(self, cr: Any, name: str, decision: Decision) -> None:
        """A rollout's step: delete the outdated replica's pod (with its grace period: its
        preStop hook stops postgres fast); its StatefulSet creates it on the new revision and
        pg-member.sh starts it as a replica. The next step waits until it streams again."""
        await self._label(name, None)
        try:
            await self.client.delete(Pod, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        self.observed.stalls.reset(name)
        await self._event(cr, "RollingUpdate", str(decision), warning=False)

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
