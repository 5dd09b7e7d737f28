"""Planned operations in the Kubernetes shell, on kmock with real members: a StatefulSet
update (``OnDelete``) rolled by the operator replicas first and the primary last through a
switchover, and a primary pod being deleted (a drain, an eviction) switched over before its
postgres stops. Neither may be a failover."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from leaderboard.operator import kube
from tests.operator.test_kube import NS, PODS, World, _world, rejoined, until
from tests.operator.test_kube_partition import replicas_through, rw_service

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STS = ("apps/v1/statefulsets", NS, "pg")


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
