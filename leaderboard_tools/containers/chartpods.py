"""``make chart-up`` / ``make chart-down``: the rendered chart's pods as containers, wired the
way the chart wires them.

What stands in for the cluster, and what it does not do:

- the API server: none. The chart is rendered with the Helm SDK (default values, the image
  just built); Secrets and ConfigMaps of the render feed env and volumes; Deployments run one
  pod each, StatefulSets all their members, each with its own volume per claim template;
  custom resources, RBAC, NetworkPolicies, HPAs and PDBs are not enforced.
- the kubelet: :mod:`.kubelet` turns a pod spec into a container (command, env, volumes,
  securityContext); :mod:`.probes` runs startup, readiness and liveness probes; an exited
  container is restarted with a back-off, as ``restartPolicy: Always`` says.
- Services: a Service with a cluster IP is a small forwarding container carrying the
  Service's DNS names (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``),
  port to target port (:mod:`.serviceproxy`); a headless Service puts its names on the pods
  (and ``pod.svc...`` for StatefulSet members). The API's and broadcaster's Services are
  published on 127.0.0.1, as a port-forward would.
- the operator: its pod runs and, with no API server, says it is waiting for one. What it
  would do at bootstrap is done once by :mod:`.bootstrap` (no failover: that is tested on
  kmock).

    python -m leaderboard_tools.containers.chartpods up [--image localhost/leaderboard:dev]
    python -m leaderboard_tools.containers.chartpods down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard_tools.containers import bootstrap, image, kube_services, kubelet, probes
from leaderboard_tools.containers.bootstrap import say
from leaderboard_tools.containers.engine import Engine, EngineError
from leaderboard_tools.containers.kubelet import Doc, Objects, Pending, Pod, PodSpecError
from leaderboard_tools.containers.release import ChartUpError, helm_test, render

LABEL = "dev.leaderboard.chart-up"
TEST_HOOK = "helm.sh/hook"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PodState:
    """What the stand-in kubelet knows of one pod."""

    pod: Pod
    started: bool = False  # its container exists
    startup_passed: bool = False
    ready: bool = False
    restarts: int = 0
    next_restart: float = 0.0
    failures: int = 0  # consecutive startup-probe failures
    last: str = "not started"
    address: str | None = None


@dataclass
class Release:
    """One chart-up: the rendered release and the containers, network and volumes it made."""

    engine: Engine
    image_ref: str
    name: str = "leaderboard"
    namespace: str = "leaderboard"
    api_port: int = 0
    ws_port: int = 0
    # Not under .run/: `leaderboard down --purge` would delete the files the pods mount.
    state_dir: Path = field(default_factory=lambda: image.REPO / ".chart-up")
    mutate: Callable[[list[Doc]], None] | None = None  # tests break a spec on purpose
    docs: list[Doc] = field(default_factory=list)
    objects: Objects = field(default_factory=Objects)
    states: dict[str, PodState] = field(default_factory=dict)
    hooks: list[Pod] = field(default_factory=list)

    @property
    def network(self) -> str:
        return f"{self.name}-chart"

    @property
    def label(self) -> str:
        return f"{LABEL}={self.name}"

    # -- down

    def down(self) -> None:
        """Remove every container, network and volume a chart-up of this name made."""
        listed = self.engine.run("ps", "--all", "--quiet", "--filter", f"label={self.label}")
        ids = listed.stdout.split()
        if ids:
            self.engine.run("rm", "--force", "--time", "0", *ids)
        volumes = self.engine.run("volume", "ls", "--quiet", "--filter", f"label={self.label}")
        for volume in volumes.stdout.split():
            self.engine.run("volume", "rm", "--force", volume)
        if self.engine.run("network", "exists", self.network, check=False).returncode == 0:
            self.engine.run("network", "rm", "--force", self.network)
        shutil.rmtree(self.state_dir / self.name, ignore_errors=True)

    # -- up

    def _values(self) -> dict[str, Any]:
        repository, _, tag = self.image_ref.rpartition(":")
        return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}

    def _pods(self) -> None:
        for doc in self.docs:
            kind, meta = doc["kind"], doc["metadata"]
            if kind in ("Deployment", "StatefulSet"):
                template = doc["spec"]["template"]
                labels = dict(template["metadata"].get("labels") or {})
                count = int(doc["spec"].get("replicas", 1)) if kind == "StatefulSet" else 1
                for index in range(count):
                    name = f"{meta['name']}-{index}"
                    claims = {
                        claim["metadata"]["name"]: f"{self.name}-{claim['metadata']['name']}-{name}"
                        for claim in doc["spec"].get("volumeClaimTemplates") or []
                    }
                    pod = Pod(name, self.namespace, dict(labels), template["spec"],
                              f"{kind}/{meta['name']}", claims)  # fmt: skip
                    self.states[name] = PodState(pod)
            elif kind == "Pod":
                pod = Pod(meta["name"], self.namespace, dict(meta.get("labels") or {}),
                          doc["spec"], f"Pod/{meta['name']}")  # fmt: skip
                if (meta.get("annotations") or {}).get(TEST_HOOK) == "test":
                    self.hooks.append(pod)
                else:
                    self.states[pod.name] = PodState(pod)
            elif kind in ("Job", "CronJob", "DaemonSet", "ReplicaSet"):
                raise ChartUpError(f"{kind} {meta['name']}: not supported by chart-up")

    def _start_services(self) -> None:
        published = {}
        for component, port in (("api", self.api_port), ("broadcaster", self.ws_port)):
            name = kube_services.service_of(self.objects.services, component)
            if name is None:
                raise ChartUpError(f"the chart renders no Service for the {component} pods")
            published[name] = port
        kube_services.start(
            self.engine, self.objects.services, [s.pod for s in self.states.values()],
            folder=self.state_dir / self.name / "services", namespace=self.namespace,
            label=self.label, network=self.network, image_ref=self.image_ref,
            published=published,
        )  # fmt: skip

    def _jwt_secret(self) -> str | None:
        """The HS256 secret the API's pods are given (from whichever Secret the render names)."""
        for state in self.states.values():
            if state.pod.labels.get("app.kubernetes.io/component") != "api":
                continue
            for entry in state.pod.container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if entry["name"] == "LEADERBOARD_JWT_SECRET" and ref:
                    return self.objects.secrets.get(ref["name"], {}).get(ref["key"])
        return None

    def _volumes(self) -> None:
        for state in self.states.values():
            pod = state.pod
            group = (pod.spec.get("securityContext") or {}).get("fsGroup")
            for volume in pod.claims.values():
                self.engine.run("volume", "create", "--label", self.label, volume)
                if group is not None:  # the kubelet's fsGroup: the volume is the group's
                    inspect = ("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
                    path = Path(self.engine.run(*inspect).stdout.strip())
                    with contextlib.suppress(PermissionError):
                        os.chown(path, 0, int(group))
                        path.chmod(0o2775)

    def _create(self, state: PodState) -> bool:
        """Create and start the pod's container; False while it waits for an object."""
        pod = state.pod
        try:
            user = self.engine.inspect(pod.container["image"], "{{.Config.User}}")
            run = kubelet.plan(pod, self.objects, image_user=user,
                               files=self.state_dir / self.name / "files")  # fmt: skip
        except Pending as waiting:
            state.last = f"waiting: {waiting}"
            return False
        env = {**self.engine.env, **run.env}
        flags = [f"--env={k}" for k in run.env]  # values through the environment, not argv
        names = kube_services.pod_aliases(pod, self.objects.services, self.namespace)
        aliases = [f"--network-alias={a}" for a in names]
        self.engine.run(
            "create", "--name", pod.name, "--label", self.label, "--network", self.network,
            *aliases, *run.flags, *flags, run.image, *run.args, env=env,
        )  # fmt: skip
        self.engine.run("start", pod.name)
        state.started = True
        state.address = self._address(pod.name)
        state.last = "started"
        return True

    def _address(self, name: str) -> str | None:
        template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        done = self.engine.run("inspect", "--format", template, name, check=False)
        return done.stdout.strip() or None

    def _status(self, name: str) -> tuple[str, int]:
        done = self.engine.run(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check=False
        )
        status, _, code = done.stdout.strip().partition(" ")
        return status, int(code or 0)

    def logs(self, name: str, lines: int = 15) -> str:
        done = self.engine.run("logs", "--tail", str(lines), name, check=False)
        return (done.stdout + done.stderr).strip()

    async def _tick(self, state: PodState) -> None:
        """One round of the kubelet for one pod: start, restart, probe."""
        pod, now = state.pod, time.monotonic()
        if not state.started:
            await asyncio.to_thread(self._create, state)
            return
        status, code = await asyncio.to_thread(self._status, pod.name)
        if status != "running":
            state.ready = False
            if now >= state.next_restart:
                state.restarts += 1
                last = (await asyncio.to_thread(self.logs, pod.name, 1)).splitlines()
                state.last = f"exited {code} ({last[-1] if last else 'no output'}); restarted"
                state.next_restart = now + min(2.0**state.restarts, 10.0)
                state.startup_passed = False
                await asyncio.to_thread(self.engine.run, "start", pod.name, check=False)
                state.address = await asyncio.to_thread(self._address, pod.name)
            return
        container = pod.container
        if not state.startup_passed:
            startup = container.get("startupProbe")
            if startup is None:
                state.startup_passed = True
            else:
                outcome = await probes.run(self.engine, pod, startup, state.address)
                state.last = f"startupProbe {probes.describe(startup)}: {outcome.detail}"
                if not outcome.passed:
                    state.failures += 1
                    if state.failures >= int(startup.get("failureThreshold", 3)):
                        state.failures = 0  # the kubelet kills the container; it restarts
                        await asyncio.to_thread(self.engine.run, "stop", "-t", "0", pod.name,
                                                check=False)  # fmt: skip
                    return
                state.startup_passed = True
        readiness = container.get("readinessProbe")
        if readiness is None:
            state.ready, state.last = True, "running (no readiness probe)"
            return
        outcome = await probes.run(self.engine, pod, readiness, state.address)
        state.ready = outcome.passed
        state.last = f"readinessProbe {probes.describe(readiness)}: {outcome.detail}"

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pods = [s.pod for s in self.states.values()]
        standin = asyncio.create_task(
            bootstrap.provision_clusters(self.engine, self.docs, self.objects, pods, self.namespace)
        )
        try:
            while True:
                for state in self.states.values():
                    await self._tick(state)
                if standin.done():
                    standin.result()  # raises what failed in it
                if all(s.ready for s in self.states.values()) and standin.done():
                    return
                if time.monotonic() > deadline:
                    raise ChartUpError(self._not_ready(timeout))
                await asyncio.sleep(0.5)
        finally:
            standin.cancel()

    def _not_ready(self, timeout: float) -> str:
        lines = [f"not ready after {timeout:.0f} s:"]
        for state in self.states.values():
            if not state.ready:
                lines.append(f"  pod {state.pod.name}: {state.last} (restarts: {state.restarts})")
                if state.started:
                    logs = dict.fromkeys(self.logs(state.pod.name, 8).splitlines())  # no repeats
                    lines += [f"    | {line}" for line in list(logs)[-4:]]
        return "\n".join(lines)

    async def _liveness(self) -> dict[str, str]:
        report = {}
        for state in self.states.values():
            probe = state.pod.container.get("livenessProbe")
            if probe:
                outcome = await probes.run(self.engine, state.pod, probe, state.address)
                report[state.pod.name] = (
                    f"{'passed' if outcome.passed else 'FAILED'}: {outcome.detail}"
                )
                if not outcome.passed:
                    raise ChartUpError(
                        f"pod {state.pod.name}: livenessProbe {probes.describe(probe)} failed: "
                        f"{outcome.detail}"
                    )
        return report

    def _helm_test(self) -> dict[str, str]:
        return helm_test(self.engine, self.hooks, self.objects,
                         files=self.state_dir / self.name / "files", label=self.label,
                         network=self.network)  # fmt: skip

    async def up(self, timeout: float = 300) -> dict[str, Any]:
        self.down()  # a second chart-up replaces the first
        self.api_port = self.api_port or _free_port()
        self.ws_port = self.ws_port or _free_port()
        self.docs = render(self.name, self.namespace, self._values())
        if self.mutate:
            self.mutate(self.docs)
        self.objects = Objects.of(self.docs)
        self._pods()
        for ref in {s.pod.container["image"] for s in self.states.values()} - {self.image_ref}:
            image.ensure_base(self.engine, ref)
        pods = [s.pod for s in self.states.values()]
        for state in self.states.values():  # a broken spec fails before anything starts
            kubelet.plan(state.pod, Objects(
                secrets={**self.objects.secrets, **bootstrap.placeholders(pods)},
                configmaps=self.objects.configmaps, services=self.objects.services,
            ), image_user="10001", files=self.state_dir / self.name / "dry-run")  # fmt: skip
        bootstrap.label_roles(pods)
        stale = self.engine.forget_stale_dns()
        if stale:
            say(f"removed name-server files of networks that are gone: {', '.join(stale)}")
        self.engine.run("network", "create", "--label", self.label, self.network)
        self._volumes()
        self._start_services()
        say(f"starting {len(self.states)} pods on network {self.network}")
        started = time.monotonic()
        await self._wait_ready(timeout)
        say(f"every pod ready after {time.monotonic() - started:.1f} s")
        liveness = await self._liveness()
        tests = self._helm_test()
        return {
            "api_url": f"http://127.0.0.1:{self.api_port}",
            "ws_url": f"ws://127.0.0.1:{self.ws_port}/ws",
            "jwt_secret": self._jwt_secret(),
            "release": self.name,
            "namespace": self.namespace,
            "network": self.network,
            "pods": {
                s.pod.name: {
                    "ready": s.ready,
                    "restarts": s.restarts,
                    "address": s.address,
                    "liveness": liveness.get(s.pod.name, "no probe"),
                }
                for s in self.states.values()
            },
            "helm_test": tests,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard_tools.containers.chartpods")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--image", default=image.DEFAULT_TAG, help="the leaderboard image")
    parser.add_argument("--release", default="leaderboard")
    parser.add_argument("--namespace", default="leaderboard")
    parser.add_argument("--api-port", type=int, default=0, help="host port of the API (0: free)")
    parser.add_argument("--ws-port", type=int, default=0, help="host port of the broadcaster")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for ready")
    args = parser.parse_args(argv)
    try:
        engine = Engine.detect()
        release = Release(engine, args.image, name=args.release, namespace=args.namespace,
                          api_port=args.api_port, ws_port=args.ws_port)  # fmt: skip
        if args.command == "down":
            release.down()
            say(f"removed release {args.release}: containers, network and volumes")
            return 0
        result = asyncio.run(release.up(args.timeout))
    except (ChartUpError, PodSpecError, EngineError) as error:
        say(f"failed: {error}")
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
