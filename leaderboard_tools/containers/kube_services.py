"""chart-up's Services: each ClusterIP Service a forwarding container (:mod:`.serviceproxy`)
carrying the Service's DNS names; a headless Service's names go on the pods themselves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from leaderboard_tools.containers import kubelet
from leaderboard_tools.containers.engine import Engine
from leaderboard_tools.containers.kubelet import Doc, Pod

PROXY = Path(__file__).with_name("serviceproxy.py")


def aliases(service: Doc, namespace: str) -> list[str]:
    """The four DNS forms a Service's name takes inside the cluster."""
    name = service["metadata"]["name"]
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local"]  # fmt: skip


def pod_aliases(pod: Pod, services: Iterable[Doc], namespace: str) -> list[str]:
    """The names a pod answers to: its headless Services' and ``pod.<service>...``."""
    names: list[str] = []
    for service in services:
        spec = service.get("spec") or {}
        if spec.get("clusterIP") != "None":
            continue
        if kubelet.selects(spec.get("selector"), pod.labels):
            names += aliases(service, namespace)
            names += [f"{pod.name}.{a}" for a in aliases(service, namespace)]
    return names


def endpoints(service: Doc, pods: Iterable[Pod]) -> dict[str, Any]:
    """Each port of the Service and the (pod, target port) pairs it selects."""
    spec = service["spec"]
    selected = [p for p in pods if kubelet.selects(spec.get("selector"), p.labels)]
    ports = []
    for port in spec["ports"]:
        targets = [[p.name, p.port(port.get("targetPort", port["port"]))] for p in selected]
        ports.append({"port": port["port"], "targets": targets})
    return {"ports": ports}


def service_of(services: Iterable[Doc], component: str) -> str | None:
    """The Service that selects a component's pods, as the render names it."""
    for service in services:
        selector = (service.get("spec") or {}).get("selector") or {}
        if selector.get("app.kubernetes.io/component") == component:
            return str(service["metadata"]["name"])
    return None


def start(
    engine: Engine,
    services: Iterable[Doc],
    pods: list[Pod],
    *,
    folder: Path,
    namespace: str,
    label: str,
    network: str,
    image_ref: str,
    published: Mapping[str, int],
) -> None:
    """One forwarding container per ClusterIP Service; ``published``: Service name -> host
    port on 127.0.0.1 (as a port-forward would)."""
    folder.mkdir(parents=True, exist_ok=True)
    for service in services:
        spec = service.get("spec") or {}
        if spec.get("clusterIP") == "None":
            continue
        name = service["metadata"]["name"]
        table = folder / f"{name}.json"
        table.write_text(json.dumps(endpoints(service, pods)))
        table.chmod(0o644)
        flags = [f"--network-alias={a}" for a in aliases(service, namespace)]
        if name in published:
            first = spec["ports"][0]["port"]
            flags += ["--publish", f"127.0.0.1:{published[name]}:{first}"]
        engine.run(
            "run", "--detach", "--name", f"{name}-svc", "--label", label, "--network", network,
            *flags,
            "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",  # port 80 as user 10001
            "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--mount", f"type=bind,source={table},destination=/etc/lb/endpoints.json,ro",
            # The proxy is tooling (stdlib only), not in the image: mounted from here.
            "--mount", f"type=bind,source={PROXY},destination=/etc/lb/serviceproxy.py,ro",
            "--entrypoint", "python", image_ref,
            "/etc/lb/serviceproxy.py", "/etc/lb/endpoints.json",
        )  # fmt: skip
