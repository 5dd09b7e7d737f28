"""Planned operations in the Kubernetes shell, on kmock with real members: a StatefulSet
update (``OnDelete``) rolled by the operator replicas first and the primary last through a
switchover, a primary pod being deleted (a drain, an eviction) switched over before its
postgres stops (neither may be a failover), ``spec.instances`` scaling that never removes the
primary, and a renewed certificate served without a restart."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import shutil
import ssl
from typing import Any

import asyncpg
import pytest

from leaderboard.operator import kube
from leaderboard_tools.devstack.postgres import Member
from tests.operator.test_kube import CR, NS, PODS, World, _world, rejoined, until
from tests.operator.test_kube_partition import replicas_through, rw_service
from tests.support import eventually

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STS = ("apps/v1/statefulsets", NS, "pg")
WATCHED = ("Promoted", "Scaled")


def statefulset(revision: str, replicas: int) -> dict[str, Any]:
    labels = {kube.CLUSTER_LABEL: "pg"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "pg", "namespace": NS, "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "serviceName": "pg-hl",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
            "updateStrategy": {"type": "OnDelete"},
        },
        "status": {"replicas": replicas, "updateRevision": revision, "currentRevision": "pg-1"},
    }


def promotions(world: World) -> list[str]:
    events = sorted(world.events(), key=lambda e: e["metadata"]["name"])
    return [e["message"] for e in events if e["reason"] == "Promoted"]


def revisions(world: World) -> dict[str, str | None]:
    found = {m.name: world.obj(PODS, m.name) for m in world.stack.members}
    return {
        name: (pod or {}).get("metadata", {}).get("labels", {}).get("controller-revision-hash")
        for name, pod in found.items()
    }


async def test_a_rollout_restarts_the_replicas_first_and_the_primary_last_by_switchover() -> None:
    async with _world(members=3) as world:
        world.revision = "pg-1"
        for member in world.stack.members:
            world.add_pod(member.name)
        world.k8s.objects[STS] = statefulset("pg-1", replicas=3)
        world.start("operator-a")
        await until(
            world,
            lambda: (
                world.status.get("phase") == "Healthy"
                and world.status.get("rollout") == {"phase": "Complete", "outdated": []}
            ),
            timeout=60,
            what="operator-a to adopt",
        )
        assert world.status["currentPrimary"] == "member0"
        async with rw_service(world) as rw:
            await replicas_through(world, rw)
            world.rw_port = rw.port
            world.keep_pods()
            await _roll(world)


async def _roll(world: World) -> None:
    """Change the pod template and follow the rollout to its end."""
    # `helm upgrade` changed the pod template: the StatefulSet has a new update revision
    # and, under OnDelete, restarts nothing itself.
    world.revision = "pg-2"
    world.k8s.objects[STS] = statefulset("pg-2", replicas=3)
    await until(
        world,
        lambda: world.status.get("rollout", {}).get("phase") == "Rolling",
        timeout=30,
        what="the rollout to start",
    )
    await until(
        world,
        lambda: (
            world.status.get("rollout") == {"phase": "Complete", "outdated": []}
            and world.status.get("phase") == "Healthy"
            and set(revisions(world).values()) == {"pg-2"}
        ),
        timeout=240,
        what="the rollout to finish",
    )
    # Replicas first (the highest ordinal first, as a StatefulSet would), each back before
    # the next; the primary last, once a switchover made it a replica.
    assert world.recreated == ["member2", "member1", "member0"]
    new_primary = world.status["currentPrimary"]
    assert new_primary in ("member1", "member2")
    assert promotions(world) == [f"{new_primary} is the primary (switchover)"]
    rolled = [e["message"] for e in world.events() if e["reason"] == "RollingUpdate"]
    assert sorted(rolled) == sorted(
        [
            "roll-replica member2: rollout: restarting replica member2 on the new revision "
            "(0 of 3 members updated)",
            "roll-replica member1: rollout: restarting replica member1 on the new revision "
            "(1 of 3 members updated)",
        ]
    )
    await rejoined(world, "member0")
    assert world.role("member0") == "replica" and world.role(new_primary) == "primary"


async def test_a_terminating_primary_pod_is_switched_over_not_failed_over() -> None:
    async with _world(members=2) as world:
        world.start("operator-a")
        await until(
            world,
            lambda: world.status.get("phase") == "Healthy",
            timeout=60,
            what="operator-a to adopt",
        )
        world.keep_pods()
        # A drain evicts the primary's pod: the API server sets deletionTimestamp (the
        # finalizer stands for the kubelet, which keeps the pod while its preStop hook runs)
        # and the kubelet runs the hook, pg-member.sh stop, which holds postgres up while it
        # is the primary.
        member0 = world.member("member0")
        pod = world.obj(PODS, "member0")
        assert pod is not None
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod["metadata"] |= {"deletionTimestamp": now, "finalizers": ["kubelet.test/pre-stop"]}
        world.k8s.objects[PODS, NS, "member0"] = pod
        hook = asyncio.create_task(
            asyncio.to_thread(member0.pre_stop, world.stack.superuser_password, 120)
        )

        await until(
            world,
            lambda: fenced(world, "member0") and world.status.get("currentPrimary") == "member1",
            timeout=30,
            what="the switchover",
        )
        # The fence is a delete with no grace: the kubelet kills the container, which ends
        # the hook long before its 120 s, and the pod goes; its StatefulSet brings it back
        # (following the new primary: the emulated StatefulSet reads it from the status).
        assert not hook.done()
        await asyncio.to_thread(member0.kill)
        await asyncio.wait_for(hook, 30)
        world.k8s.objects[PODS, NS, "member0"].delete()

        await rejoined(world, "member0")
        assert world.status["currentPrimary"] == "member1"
        assert promotions(world) == ["member1 is the primary (switchover)"]
        reasons = {e["reason"] for e in world.events()}
        assert "SwitchedOver" in reasons and "Promote" not in reasons  # no failover decision
        assert world.recreated == ["member0"]
        assert world.status["syncStandbys"] == ["member0"]


def fenced(world: World, name: str) -> bool:
    return any(e["reason"] == "Fenced" and name in e["message"] for e in world.events())


async def test_instances_3_to_4_to_2_clone_a_member_and_never_remove_the_primary() -> None:
    async with _world(members=4) as world:
        # A cluster of three; member3 is the ordinal a scale-up adds: no pod, no data.
        member3 = world.member("member3")
        await asyncio.to_thread(member3.kill)
        shutil.rmtree(member3.data_dir)
        world.k8s.objects[PODS, NS, "member3"].delete()
        world.revision = "pg-1"
        for name in ("member0", "member1", "member2"):
            world.add_pod(name)
        world.k8s.objects[STS] = statefulset("pg-1", replicas=3)
        set_spec(world, instances=3)
        world.start("operator-a")
        await until(world, lambda: healthy(world, 3), timeout=60, what="operator-a to adopt")

        async with rw_service(world) as rw:
            await replicas_through(world, rw)
            world.rw_port = rw.port
            world.keep_pods()

            set_spec(world, instances=4)  # member3 is cloned and becomes a candidate
            await until(
                world,
                lambda: healthy(world, 4) and "member3" in world.status["syncStandbys"],
                timeout=120,
                what="the fourth member",
            )
            assert replicas(world) == 4 and member3.exists
            set_spec(world, switchoverTo="member3")  # the primary on an ordinal that leaves
            await until(
                world,
                lambda: world.status.get("currentPrimary") == "member3" and healthy(world, 4),
                timeout=60,
                what="the switchover to member3",
            )

            set_spec(world, instances=2)
            await until(world, lambda: healthy(world, 2), timeout=120, what="two members")
        primary = world.status["currentPrimary"]
        assert primary in ("member0", "member1") and replicas(world) == 2
        assert sorted(world.removed) == ["member2", "member3"]
        # The primary moved off member3 (a switchover) before the StatefulSet shrank.
        events = sorted(world.events(), key=lambda e: e["metadata"]["name"])
        said = [(e["reason"], e["message"]) for e in events if e["reason"] in WATCHED]
        assert said == [
            ("Scaled", "scale: scaling up from 3 to 4 members"),
            ("Promoted", "member3 is the primary (switchover)"),
            ("Promoted", f"{primary} is the primary (switchover)"),
            ("Scaled", said[-1][1]),
        ]
        assert said[-1][1].startswith("scale: scaling down from 4 to 2 members: member2, member3")
        # Only the staying standby may acknowledge a commit from the scale-down on: one that a
        # leaving standby alone acknowledged would be lost with it.
        other = ({"member0", "member1"} - {primary}).pop()
        conn = await world.member(primary).connect(world.stack.superuser_password)
        try:
            names = await conn.fetchval("SHOW synchronous_standby_names")
        finally:
            await conn.close()
        assert names == f'ANY 1 ("{other}")'


def set_spec(world: World, **change: Any) -> None:
    found = world.obj(CR[0], CR[2])
    assert found is not None
    world.k8s.objects[CR] = {**found, "spec": {**found["spec"], **change}}


def replicas(world: World) -> int:
    return int((world.obj("apps/v1/statefulsets", "pg") or {})["spec"]["replicas"])


def healthy(world: World, members: int) -> bool:
    status = world.status
    return status.get("phase") == "Healthy" and len(status.get("members") or []) == members


async def test_a_renewed_certificate_is_served_without_a_restart() -> None:
    async with _world(tls=True) as world:
        stack = world.stack
        assert stack.tls is not None
        tls_secret = ("v1/secrets", NS, "pg-tls")
        secret = world.obj(tls_secret[0], tls_secret[2])
        assert secret is not None
        world.k8s.objects[tls_secret] = secret | {
            "data": secret["data"] | {"tls.crt": b64(stack.tls.server_cert.read_bytes())}
        }
        world.start("operator-a")
        await until(world, lambda: world.status.get("phase") == "Healthy", timeout=60, what="adopt")
        pids = [m.pid() for m in stack.members]
        assert None not in pids
        sessions = [await m.connect(stack.superuser_password) for m in stack.members]
        try:
            # cert-manager renews the Secret (a new CA as well: the hardest case) and the
            # kubelet rewrites the mounted files; postgres still serves what it loaded.
            old_ca = stack.tls.ca_cert.read_bytes()
            user = stack.pg_os_user
            stack.tls.create(["localhost", "127.0.0.1"], uid=user.uid, gid=user.gid)
            assert stack.tls.ca_cert.read_bytes() != old_ca
            fresh = ssl.create_default_context(cafile=stack.tls.ca_cert)
            assert not await serves(stack.members[0], fresh, stack.superuser_password)
            world.k8s.objects[tls_secret] = secret | {
                "data": {
                    "ca.crt": b64(stack.tls.ca_cert.read_bytes()),
                    "tls.crt": b64(stack.tls.server_cert.read_bytes()),
                }
            }

            async def every_member_serves_it() -> bool:
                for member in stack.members:
                    if not await serves(member, fresh, stack.superuser_password):
                        return False
                return True

            await eventually(every_member_serves_it, timeout=30, interval=0.3)
            # No restart, no session lost, and the operator still reaches every member.
            assert [m.pid() for m in stack.members] == pids
            for session in sessions:
                assert await session.fetchval("SELECT 1") == 1
            events = world.events()
            reloaded = [e["message"] for e in events if e["reason"] == "CertificateReloaded"]
            assert sorted(reloaded) == [
                f"{m.name} serves the renewed certificate of pg-tls" for m in stack.members
            ]
            await until(
                world, lambda: world.status.get("phase") == "Healthy", timeout=10, what="healthy"
            )
        finally:
            for session in sessions:
                await session.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def serves(member: Member, context: ssl.SSLContext, password: str) -> bool:
    """Whether a new connection verifies against ``context`` (the certificate it presents)."""
    try:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=member.port, user="postgres", password=password,
            database="postgres", ssl=context, timeout=3,
        )  # fmt: skip
    except (ssl.SSLError, OSError):
        return False
    await conn.close()
    return True
