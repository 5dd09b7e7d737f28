"""The Kubernetes shell's shared ground: names, labels, the pod helpers, and the state of
one PostgresCluster's loop (:class:`Shell`) with the SQL every part of it runs."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Pod, Secret

from leaderboard.operator import provision
from leaderboard.operator.decide import (
    Action,
)
from leaderboard.operator.kube.lease import LeaseLock
from leaderboard.operator.members import Observations

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


def started(pod: Pod) -> bool:
    """Whether the postgres container passed its startup probe (the kubelet says so)."""
    statuses = (pod.status.containerStatuses if pod.status else None) or []
    return any(s.name == "postgres" and s.started for s in statuses)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_of(pod: Pod) -> dict[str, str]:
    return dict(pod.metadata.labels or {}) if pod.metadata else {}


def name_of(pod: Pod) -> str:
    assert pod.metadata is not None and pod.metadata.name is not None
    return pod.metadata.name


class Shell:
    """The state one PostgresCluster's loop keeps, and what every part of it needs: the
    superuser's password and SQL on one member. The parts: :class:`~.kubeobserve.Observe`,
    :class:`~.kubeact.Act`, :class:`~.kubepublish.Publish`; the loop is
    :class:`~.kube.KubeOperator`."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        address: Address = pod_address,
        lease_s: int = 10,
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
        self.observed = Observations()  # probes missed, stalls, synchronous candidates
        self._rejoined_at: dict[str, float] = {}
        self._last_reason: str | None = None
        self._last_status: dict[str, Any] = {}
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None  # spec.tls: the members' CA
        # primary_conninfo of the replicas detached for a promotion, until it is given back
        self.saved_conninfo: dict[str, str] = {}
        self._tls_secret: str | None = None
        self._cas: tuple[str, ...] = ()  # trusted while a CA rotation is under way (certs.py)
        self._reloaded: dict[str, str] = {}  # member -> the certificate it was reloaded for
        self._certs_checked_at = 0.0
        self._adopted = False
        self._provisioned = False  # the -rw/-ro Services, the app's role and its Secret
        self.standby_rounds = 0  # rounds in which another instance held the lease
        self.rounds = 0  # rounds it acted in (held the lease)

    async def _load_tls(self, spec: Mapping[str, Any]) -> None:
        """``spec.tls.secretName``: the members serve TLS with a certificate from that Secret
        and accept nothing else; the operator verifies them against its ``ca.crt``. It reaches
        members by pod address, which no certificate names, so it checks the CA, not the
        name (libpq's verify-ca; the applications use verify-full through the -rw Service)."""
        secret_name = (spec.get("tls") or {}).get("secretName") or None
        if secret_name == self._tls_secret:
            return
        if secret_name is None:
            self._tls, self._tls_secret = None, None
            return
        secret = await self.client.get(Secret, secret_name, namespace=self.namespace)
        ca = base64.b64decode((secret.data or {})["ca.crt"]).decode()
        context = ssl.create_default_context(cadata=ca)
        context.check_hostname = False  # verify_mode stays CERT_REQUIRED
        self._tls, self._tls_secret = context, secret_name
        self._cas = (ca,)  # a rotation seen later is trusted alongside it (certs.py)

    async def _superuser_password(self) -> str:
        if self._password is None:
            secret = await self.client.get(
                Secret, f"{self.name}-credentials", namespace=self.namespace
            )
            data = secret.data or {}
            self._password = base64.b64decode(data["superuser-password"]).decode()
        return self._password

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
            timeout=timeout, command_timeout=timeout, ssl=self._tls,
            server_settings={"application_name": COMPONENT},
        )  # fmt: skip
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()


def event_reason(action: Action) -> str:
    return "".join(part.capitalize() for part in action.value.split("-")) or "None"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)
