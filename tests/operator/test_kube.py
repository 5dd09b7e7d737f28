"""The Kubernetes shell against kmock (the only mock here: no cluster can run) and a real
PostgreSQL primary + synchronous standby standing in for the pods ``member0`` and ``member1``
(named like the local members, as pods are named like their application_name).

Two operator instances run against the same emulated API server, each on its own thread and
event loop as separate processes would (kopf cancels what shares its loop); one holds the
Lease and acts, the other stands by. Killing the primary's postgres makes the active one fail
over; the test then checks what Kubernetes users look at: pod labels, the -rw/-ro Services,
the -app Secret, the PostgresCluster's status and the Events. The old primary then comes back
the way its StatefulSet would bring it back, through pg-member.sh, as a replica.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import asyncpg
import kopf
import pytest
import pytest_asyncio
import uvloop
from kmock import Server
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.core_v1 import Secret, Service

from leaderboard.operator import kube
from leaderboard.operator.kube import KubeOperator
from leaderboard.operator.kube.observe import REVISION_LABEL
from leaderboard.operator.kube.shell import Address
from leaderboard.operator.planned import ordinal
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.stack import Stack
from tests.conftest import own_cluster
from tests.operator.kubemock import Emulator
from tests.support import eventually

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NS = "shop"
CR = ("leaderboard.dev/v1/postgresclusters", NS, "pg")
PODS = "v1/pods"


@dataclass
class Instance:
    identity: str
    operators: list[KubeOperator] = field(default_factory=list)  # read across threads only
    stop_flag: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failure: BaseException | None = None


@dataclass
class World:
    k8s: Emulator
    url: str
    stack: Stack
    instances: list[Instance] = field(default_factory=list)
    statefulset: asyncio.Task[None] | None = None
    stopping: bool = False
    revision: str | None = None  # the pods' controller-revision-hash (a rollout's tests)
    recreated: list[str] = field(default_factory=list)  # pods recreate() brought back, in order
    rw_port: int | None = None  # an emulated -rw Service that recreated members stream from
    removed: list[str] = field(default_factory=list)  # pods a scale-down took away, in order

    def obj(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.k8s.objects[resource, NS, name]
        except KeyError:
            return None
        return None if found.deleted else dict(found.raw)

    @property
    def status(self) -> dict[str, Any]:
        found = self.obj(CR[0], CR[2])
        return dict((found or {}).get("status") or {})

    def role(self, pod: str) -> str | None:
        found = self.obj(PODS, pod)
        return None if found is None else found["metadata"].get("labels", {}).get(kube.ROLE_LABEL)

    def events(self) -> list[dict[str, Any]]:
        return [
            dict(o.raw)
            for (res, _, _), o in self.k8s.objects.items()
            if str(res).startswith("v1/events") or getattr(res, "plural", "") == "events"
        ]

    def add_pod(self, name: str, *, started: bool = True) -> None:
        """As its StatefulSet would create it; the port is the local member's. ``started``:
        whether the postgres container passed its startup probe."""
        port = next(m.port for m in self.stack.members if m.name == name)
        self.k8s.objects[PODS, NS, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {
                    kube.CLUSTER_LABEL: "pg",
                    **({REVISION_LABEL: self.revision} if self.revision else {}),
                },
                "resourceVersion": "1",
            },
            "spec": {
                "containers": [
                    {"name": "postgres", "ports": [{"name": "postgres", "containerPort": port}]}
                ]
            },
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "containerStatuses": [
                    {
                        "name": "postgres",
                        "started": started,
                        "ready": started,
                        "restartCount": 0,
                        "image": "postgres:15",
                        "imageID": "",
                    }
                ],
            },
        }

    def member(self, name: str) -> Member:
        return next(m for m in self.stack.members if m.name == name)

    async def recreate(self, name: str) -> None:
        """What its StatefulSet, the kubelet and pg-member.sh do for a deleted member pod:
        the container is gone, a new pod comes (not started yet), pg-member.sh rewinds the
        data onto the current primary and starts postgres, the startup probe passes."""
        member = self.member(name)
        primary: Any = self.member(self.status["currentPrimary"])
        if self.rw_port is not None:  # as in a pod: PRIMARY_HOST is the -rw Service
            primary = SimpleNamespace(host="127.0.0.1", port=self.rw_port, name="pg-rw")
        self.recreated.append(name)
        await asyncio.to_thread(member.kill)
        self.add_pod(name, started=False)
        await asyncio.to_thread(member.follow, primary, self.stack.superuser_password)
        member.start()
        await eventually(lambda: _accepts(member, self.stack.superuser_password), timeout=60)
        self.add_pod(name, started=True)

    def wanted(self, name: str) -> bool:
        """Whether the StatefulSet (if the test made one) keeps this ordinal."""
        sts = self.obj("apps/v1/statefulsets", "pg")
        return sts is None or ordinal(name) < int(sts["spec"]["replicas"])

    async def scale_away(self, name: str) -> None:
        """What a StatefulSet scaled down does to a pod past its replicas: the pod is deleted
        (a replica's preStop hook stops its postgres fast; killed here) and goes."""
        self.removed.append(name)
        await asyncio.to_thread(self.member(name).kill)
        self.k8s.objects[PODS, NS, name].delete()

    def keep_pods(self) -> None:
        """From now on, like a StatefulSet: a member pod that is deleted comes back, within
        its replicas (a pod past them goes)."""

        async def loop() -> None:
            while not self.stopping:
                for member in self.stack.members:
                    if self.stopping:
                        break
                    present = self.obj(PODS, member.name) is not None
                    if not self.wanted(member.name):
                        if present:
                            await self.scale_away(member.name)
                    elif not present:
                        await self.recreate(member.name)
                await asyncio.sleep(0.1)

        self.statefulset = asyncio.create_task(loop())

    def start(
        self, identity: str, address: Address | None = None, url: str | None = None
    ) -> Instance:
        """An operator instance; ``address``: how it reaches pods (a partition cuts some);
        ``url``: its way to the API server (a proxy its node loss cuts)."""
        instance = Instance(identity)
        server = url or self.url

        async def operate() -> None:
            client = AsyncClient(KubeConfig.from_one(cluster=Cluster(server=server), user=User()))
            registry = kopf.OperatorRegistry()
            kube.register(registry)

            @kopf.on.login(registry=registry)
            def login(**_: Any) -> kopf.ConnectionInfo:
                return kopf.ConnectionInfo(server=server)

            memo = kopf.Memo(client=client, identity=identity, operators=instance.operators)
            if address is not None:
                memo.address = address
            try:
                await kopf.operator(
                    registry=registry, memo=memo, clusterwide=True, standalone=True,
                    stop_flag=instance.stop_flag,
                )  # fmt: skip
            finally:
                await client.close()

        def main() -> None:
            # The Runner cancels and awaits whatever kopf leaves, then closes its own loop.
            try:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    runner.run(operate())
            except BaseException as e:  # reported by stop()
                instance.failure = e

        instance.thread = threading.Thread(target=main, name=f"kopf-{identity}", daemon=True)
        instance.thread.start()
        self.instances.append(instance)
        return instance

    async def stop(self, instance: Instance) -> None:
        """kopf's own graceful stop: its daemons see `stopped`, the Lease is released."""
        assert instance.thread is not None
        instance.stop_flag.set()
        await asyncio.to_thread(instance.thread.join, 30)
        assert not instance.thread.is_alive(), f"{instance.identity} did not stop within 30 s"
        assert instance.failure is None, repr(instance.failure)


async def _accepts(member: Member, password: str) -> bool:
    try:
        return await member.probe_role(password) == "replica"
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


async def until(world: World, check: Callable[[], bool], *, timeout: float, what: str) -> None:
    async def holds() -> bool:
        return check()

    try:
        await eventually(holds, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"waiting for {what}; status: {world.status}") from None


async def rejoined(world: World, name: str) -> None:
    await until(
        world,
        lambda: world.role(name) == "replica" and world.status.get("phase") == "Healthy",
        timeout=60,
        what=f"{name} to rejoin as a replica",
    )


def _secret(stack: Stack) -> dict[str, Any]:
    def b64(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg-credentials", "namespace": NS, "resourceVersion": "1"},
        "data": {
            "superuser-password": b64(stack.superuser_password),
            "app-password": b64(stack.app_password),
            "app-username": b64(stack.layout.pg_user),
            "app-database": b64(stack.layout.pg_database),
        },
    }


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with _world(tls=False) as w:
        yield w


@pytest_asyncio.fixture
async def world_tls() -> AsyncIterator[World]:
    """Members that serve TLS only (the chart's default); the CR names the Secret whose CA
    the operator verifies them against."""
    async with _world(tls=True) as w:
        yield w


@contextlib.asynccontextmanager
async def _world(*, tls: bool = False, members: int = 2) -> AsyncIterator[World]:
    async with (
        own_cluster("lb-kube-", tls=tls, members=members) as stack,
        Emulator() as k8s,
        Server(k8s) as server,
    ):
        with warnings.catch_warnings():  # kmock 0.8 reads it with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            k8s.resources.load_bundled()
        k8s.resources["leaderboard.dev/v1/postgresclusters"] = {
            "namespaced": True, "kind": "PostgresCluster", "singular": "postgrescluster",
            "shortnames": ["pgc"],
            "verbs": ["get", "list", "watch", "patch", "update"], "subresources": ["status"],
        }  # fmt: skip
        k8s.objects["v1/secrets", NS, "pg-credentials"] = _secret(stack)
        spec: dict[str, Any] = {
            "instances": members, "durability": "required", "probe": {"intervalSeconds": 0.3},
        }  # fmt: skip
        if stack.tls is not None:
            spec["tls"] = {"secretName": "pg-tls"}
        k8s.objects[CR] = {
            "apiVersion": "leaderboard.dev/v1",
            "kind": "PostgresCluster",
            "metadata": {"name": "pg", "namespace": NS, "uid": "pg-uid", "resourceVersion": "1"},
            "spec": spec,
        }
        if stack.tls is not None:
            ca = base64.b64encode(stack.tls.ca_cert.read_bytes()).decode()
            k8s.objects["v1/secrets", NS, "pg-tls"] = {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "pg-tls", "namespace": NS, "resourceVersion": "1"},
                "data": {"ca.crt": ca},
            }  # fmt: skip
        w = World(k8s=k8s, url=str(server.url).rstrip("/"), stack=stack)
        for member in stack.members:
            w.add_pod(member.name)
        try:
            yield w
        finally:
            w.stopping = True
            if w.statefulset is not None:
                await w.statefulset  # not cancelled: a pod it is bringing back comes back
            for instance in w.instances:
                if instance.thread and instance.thread.is_alive():
                    await w.stop(instance)


async def test_failover_moves_labels_status_and_events_and_only_the_lease_holder_acts(
    world: World,
) -> None:
    a = world.start("operator-a")
    await until(
        world,
        lambda: world.status.get("phase") == "Healthy",
        timeout=30,
        what="operator-a to adopt",
    )
    assert world.status["currentPrimary"] == "member0" and world.status["leader"] == "operator-a"
    assert (world.role("member0"), world.role("member1")) == ("primary", "replica")
    rw, ro = world.obj("v1/services", "pg-rw"), world.obj("v1/services", "pg-ro")
    assert rw and rw["spec"]["selector"] == {kube.CLUSTER_LABEL: "pg", kube.ROLE_LABEL: "primary"}
    assert ro and ro["spec"]["selector"] == {kube.CLUSTER_LABEL: "pg", kube.ROLE_LABEL: "replica"}
    app = world.obj("v1/secrets", "pg-app")
    assert app and app["stringData"]["uri"] == (
        f"postgresql://{world.stack.layout.pg_user}:{world.stack.app_password}"
        f"@pg-rw.{NS}.svc:5432/{world.stack.layout.pg_database}"
    )
    assert app["metadata"]["ownerReferences"][0]["uid"] == "pg-uid"

    # A second instance finds the Lease taken and stands by: it never writes anything.
    b = world.start("operator-b")
    await until(
        world,
        lambda: bool(b.operators) and b.operators[0].standby_rounds >= 5,
        timeout=30,
        what="operator-b to try the lease",
    )
    lease = world.obj("coordination.k8s.io/v1/leases", "pg-operator")
    assert lease and lease["spec"]["holderIdentity"] == "operator-a"

    # The primary's postgres dies; its pod object stays (a crashed container, a lost node).
    world.stack.members[0].kill()
    await until(
        world,
        lambda: (
            world.status.get("currentPrimary") == "member1"
            and world.status.get("phase") in ("Degraded", "Healthy")
        ),
        timeout=30,
        what="the failover",
    )
    status = world.status
    assert status["targetPrimary"] == "member1"
    assert status["failoverCount"] == 1 and status["lastFailover"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and "member1" in ready["message"]
    assert world.obj(PODS, "member0") is None  # fenced: deleted with no grace
    assert world.role("member1") == "primary"
    assert await world.stack.members[1].probe_role(world.stack.superuser_password) == "primary"
    assert world.obj("v1/secrets", "pg-app")["stringData"]["host"] == f"pg-rw.{NS}.svc"  # type: ignore[index]

    events = world.events()
    assert {e["reportingInstance"] for e in events} == {"operator-a"}
    assert all(e["involvedObject"]["name"] == "pg" for e in events)
    reasons = [e["reason"] for e in sorted(events, key=lambda e: e["metadata"]["name"])]
    assert reasons.index("Promote") < reasons.index("Fenced") < reasons.index("Promoted")
    promote = next(e for e in events if e["reason"] == "Promote")
    assert "promoting member1" in promote["message"]

    # The StatefulSet recreates member0; while pg-member.sh prepares it (pg_rewind, or minutes
    # of pg_basebackup) its postgres does not answer: the operator leaves the pod alone.
    def acted_on_member0() -> int:
        return sum(
            e["reason"] in ("Fence", "Fenced", "Rejoin", "Rejoining") and "member0" in e["message"]
            for e in world.events()
        )

    acted = acted_on_member0()
    world.add_pod("member0", started=False)
    (operator,) = a.operators
    rounds = operator.rounds
    await until(world, lambda: operator.rounds >= rounds + 8, timeout=30, what="8 rounds")
    assert world.obj(PODS, "member0") is not None and acted_on_member0() == acted
    await world.recreate("member0")  # pg-member.sh makes the old primary a replica
    world.keep_pods()
    await rejoined(world, "member0")
    assert world.status["syncStandbys"] == ["member0"]
    assert {e["reportingInstance"] for e in world.events()} == {"operator-a"}

    # The operators stop (releasing the Lease); a new instance carries on from the recorded
    # status rather than from scratch: same primary, same failover count, no new promotion.
    await world.stop(a)
    await world.stop(b)
    # Someone deleted the routing and the application's Secret meanwhile: they come back.
    uri = world.obj("v1/secrets", "pg-app")["stringData"]["uri"]  # type: ignore[index]
    client = AsyncClient(KubeConfig.from_one(cluster=Cluster(server=world.url), user=User()))
    successor = KubeOperator(client, namespace=NS, name="pg", identity="operator-c")
    try:
        await client.delete(Secret, "pg-app", namespace=NS)
        await client.delete(Service, "pg-rw", namespace=NS)
        assert world.obj("v1/secrets", "pg-app") is None

        async def restored() -> bool:  # provisioning waits for a round whose probe found the
            await successor.step()  # primary (a busy machine may miss one)
            return world.obj("v1/secrets", "pg-app") is not None

        await eventually(restored, timeout=20, interval=0.3)
    finally:
        await client.close()
    assert world.obj("v1/secrets", "pg-app")["stringData"]["uri"] == uri  # type: ignore[index]
    rw = world.obj("v1/services", "pg-rw")
    assert rw and rw["spec"]["selector"] == {kube.CLUSTER_LABEL: "pg", kube.ROLE_LABEL: "primary"}
    assert world.status["leader"] == "operator-c"
    assert world.status["currentPrimary"] == "member1" and world.status["failoverCount"] == 1
    assert world.role("member1") == "primary" and world.role("member0") == "replica"

    # An operator that stopped between pg_promote and recording it: the status still names
    # the old primary, targetPrimary the promoted one. The next holder finishes the record.
    world.k8s.objects[CR] = {
        **world.obj(CR[0], CR[2]),  # type: ignore[dict-item]
        "status": {**world.status, "currentPrimary": "member0", "targetPrimary": "member1"},
    }
    client = AsyncClient(KubeConfig.from_one(cluster=Cluster(server=world.url), user=User()))
    successor = KubeOperator(client, namespace=NS, name="pg", identity="operator-d", lease_s=1)
    try:
        await eventually(successor.lock.hold, timeout=25)  # operator-c's lease runs out

        async def finished() -> bool:  # in the first round whose probe finds member1 primary
            await successor.step()
            return bool(world.status["currentPrimary"] == "member1")

        await eventually(finished, timeout=20, interval=0.3)
    finally:
        await client.close()
    assert world.status["currentPrimary"] == "member1" and world.status["failoverCount"] == 2
    assert world.role("member1") == "primary" and world.role("member0") == "replica"
    assert await world.stack.members[1].probe_role(world.stack.superuser_password) == "primary"


async def test_over_tls_the_operator_verifies_the_members_fails_over_and_rejoins(
    world_tls: World,
) -> None:
    world = world_tls
    a = world.start("operator-tls")
    await until(world, lambda: world.status.get("phase") == "Healthy", timeout=30, what="adopt")
    app = world.obj("v1/secrets", "pg-app")
    assert app and app["stringData"]["uri"].endswith("?sslmode=verify-full")
    assert app["stringData"]["sslmode"] == "verify-full"
    (operator,) = a.operators  # it verifies the members against the Secret's CA
    assert operator._tls is not None and operator._tls.verify_mode == ssl.CERT_REQUIRED
    world.stack.members[0].kill()
    await until(
        world, lambda: world.status.get("currentPrimary") == "member1", timeout=30, what="failover"
    )
    await world.recreate("member0")  # pg-member.sh rewinds it over TLS
    world.keep_pods()
    await rejoined(world, "member0")
    assert world.status["syncStandbys"] == ["member0"]
    await world.stop(a)


async def test_a_switchover_and_a_pause_are_asked_for_in_the_spec(world: World) -> None:
    """``spec.switchoverTo``: planned, nothing lost, the old primary comes back as a replica and
    the request is cleared. ``spec.paused``: the operator watches a dead primary and does not
    act; unpaused, it fails over."""
    stack = world.stack
    a = world.start("operator-a")
    await until(world, lambda: world.status.get("phase") == "Healthy", timeout=30, what="adopt")

    def set_spec(**change: Any) -> None:
        found = world.obj(CR[0], CR[2])
        assert found is not None
        world.k8s.objects[CR] = {**found, "spec": {**found["spec"], **change}}

    def spec() -> dict[str, Any]:
        return dict((world.obj(CR[0], CR[2]) or {}).get("spec") or {})

    conn = await stack.members[0].connect(stack.superuser_password)
    try:  # acknowledged by the primary (and, synchronously, its standby) before the switchover
        await conn.execute("CREATE TABLE planned (id int); INSERT INTO planned VALUES (42)")
    finally:
        await conn.close()

    set_spec(switchoverTo="member1")
    await until(
        world,
        lambda: world.status.get("currentPrimary") == "member1" and not spec().get("switchoverTo"),
        timeout=30,
        what="the switchover",
    )
    assert world.obj(PODS, "member0") is None and world.role("member1") == "primary"
    assert world.status["failoverCount"] == 1
    assert "SwitchedOver" in {e["reason"] for e in world.events()}
    conn = await stack.members[1].connect(stack.superuser_password)
    try:
        assert await conn.fetchval("SELECT id FROM planned") == 42
    finally:
        await conn.close()

    # Its StatefulSet recreates the pod: pg-member.sh restarts it as a replica of member1.
    world.keep_pods()
    await rejoined(world, "member0")

    set_spec(paused=True)
    await until(world, lambda: world.status.get("phase") == "Paused", timeout=10, what="pause")
    promotions = sum(e["reason"] == "Promoted" for e in world.events())
    stack.members[1].kill()  # its pod stays: a crashed container
    (operator,) = a.operators
    await until(
        world,
        # twice the failure threshold
        lambda: operator.observed.failures.get("member1", 0) >= 3 * 2,
        timeout=30,
        what="rounds with a dead primary",
    )
    assert world.status["currentPrimary"] == "member1" and world.status["phase"] == "Paused"
    assert sum(e["reason"] == "Promoted" for e in world.events()) == promotions
    assert any("paused, observing only" in e["message"] for e in world.events())

    set_spec(paused=False)
    await until(
        world,
        lambda: world.status.get("currentPrimary") == "member0",
        timeout=30,
        what="the failover once resumed",
    )
    assert await stack.members[0].probe_role(stack.superuser_password) == "primary"


async def test_the_loop_survives_a_stray_cancellation_and_ends_on_its_own() -> None:
    """A CancelledError nobody asked for (one that leaked from a timeout) fails one round;
    a cancellation of the operator's task (kopf stopping the daemon) still ends the loop."""
    client = AsyncClient(
        KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:1"), user=User())
    )
    operator = KubeOperator(client, namespace=NS, name="pg", identity="operator-x")
    rounds = 0

    async def step() -> dict[str, Any]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise asyncio.CancelledError
        return {}

    operator.step = step  # type: ignore[method-assign]
    task = asyncio.create_task(operator.run(lambda: False, interval_s=0.01))
    try:

        async def went_on() -> bool:
            return rounds >= 3

        await eventually(went_on, timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
    assert task.cancelled()
