"""A pod of the rendered chart as one container: what a kubelet would make of its spec.

Honoured: the container's command and args (Kubernetes semantics: ``command`` replaces the
image's entrypoint and drops its CMD, ``args`` replaces the CMD), ``$(VAR)`` references,
env and envFrom from the release's Secrets and ConfigMaps and the downward API
(``metadata.name``, ``metadata.namespace``), the service-link variables Kubernetes adds for
every Service unless ``enableServiceLinks: false``, emptyDir, configMap, secret and
persistent volumes, the pod's and the container's securityContext (user, group, fsGroup,
supplemental groups, runAsNonRoot, read-only root, capabilities, no new privileges,
seccomp), and memory limits. Anything else that would change how the pod runs is refused
with the pod's name, rather than silently dropped.

Only single-container pods without init containers are supported (the chart has no other).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Doc = dict[str, Any]

# The address service links carry: podman gives a Service no virtual IP, and no traffic
# should ever follow these variables anywhere but the container itself.
SERVICE_LINK_HOST = "127.0.0.1"
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$\(")


class PodSpecError(Exception):
    """The pod cannot be run as written: the message names the pod and what is wrong."""


class Pending(Exception):
    """The pod waits for an object that does not exist yet (a kubelet retries)."""


@dataclass
class Objects:
    """The Secrets, ConfigMaps and Services of the release (and those made at run time)."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    services: list[Doc] = field(default_factory=list)

    @classmethod
    def of(cls, docs: list[Doc]) -> Objects:
        objects = cls()
        for doc in docs:
            name = doc["metadata"]["name"]
            if doc["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                objects.secrets[name] = {**data, **(doc.get("stringData") or {})}
            elif doc["kind"] == "ConfigMap":
                objects.configmaps[name] = dict(doc.get("data") or {})
            elif doc["kind"] == "Service":
                objects.services.append(doc)
        return objects


@dataclass
class Pod:
    """One pod to run: its name, labels and spec, and where its volumes come from."""

    name: str
    namespace: str
    labels: dict[str, str]
    spec: Doc
    owner: str  # "Deployment/x", "StatefulSet/x" or "Pod/x"
    claims: dict[str, str] = field(default_factory=dict)  # volume name -> engine volume

    @property
    def container(self) -> Doc:
        containers = self.spec.get("containers") or []
        if len(containers) != 1 or self.spec.get("initContainers"):
            raise PodSpecError(f"pod {self.name}: only one container and no init containers")
        container: Doc = containers[0]
        return container

    def port(self, port: int | str) -> int:
        """A container port by number or by name."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for entry in self.container.get("ports") or []:
            if entry.get("name") == port:
                return int(entry["containerPort"])
        raise PodSpecError(f"pod {self.name}: no container port named {port!r}")


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _link_name(service: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", service.upper())


def service_links(services: list[Doc]) -> dict[str, str]:
    """The variables a kubelet adds for each Service with a cluster IP (docker-link style)."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec") or {}
        if spec.get("clusterIP") == "None" or not spec.get("ports"):
            continue
        name = _link_name(service["metadata"]["name"])
        first = spec["ports"][0]
        env[f"{name}_SERVICE_HOST"] = SERVICE_LINK_HOST
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        env[f"{name}_PORT"] = f"tcp://{SERVICE_LINK_HOST}:{first['port']}"
        for port in spec["ports"]:
            proto = str(port.get("protocol", "TCP"))
            key = f"{name}_PORT_{port['port']}_{proto}"
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{_link_name(port['name'])}"] = str(port["port"])
            env[key] = f"{proto.lower()}://{SERVICE_LINK_HOST}:{port['port']}"
            env[f"{key}_PROTO"] = proto.lower()
            env[f"{key}_PORT"] = str(port["port"])
            env[f"{key}_ADDR"] = SERVICE_LINK_HOST
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)``: replaced when VAR is defined, kept as written otherwise."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$(":
            return "$("
        return env.get(match.group(1), match.group(0))

    return _REF.sub(one, text)


def _key(pod: Pod, store: Mapping[str, Mapping[str, str]], kind: str, ref: Doc) -> str | None:
    values = store.get(ref["name"])
    if values is None:
        if ref.get("optional"):
            return None
        raise Pending(f"{kind} {ref['name']!r} not found")
    if ref["key"] not in values:
        if ref.get("optional"):
            return None
        raise PodSpecError(f"pod {pod.name}: {kind} {ref['name']!r} has no key {ref['key']!r}")
    return values[ref["key"]]


def environment(pod: Pod, objects: Objects) -> dict[str, str]:
    """The container's environment, in a kubelet's order: service links, envFrom, env."""
    container = pod.container
    env: dict[str, str] = {}
    if pod.spec.get("enableServiceLinks", True):
        env.update(service_links(objects.services))
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, store in (("secretRef", objects.secrets), ("configMapRef", objects.configmaps)):
            if kind in source:
                values = store.get(source[kind]["name"])
                if values is None and not source[kind].get("optional"):
                    raise Pending(f"{kind[:-3]} {source[kind]['name']!r} not found")
                env.update({prefix + k: v for k, v in (values or {}).items()})
    fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry.get("valueFrom") or {}
        value: str | None
        if "secretKeyRef" in source:
            value = _key(pod, objects.secrets, "secret", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key(pod, objects.configmaps, "configmap", source["configMapKeyRef"])
        elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
            value = fields[source["fieldRef"]["fieldPath"]]
        else:
            raise PodSpecError(f"pod {pod.name}: env {name}: unsupported source {source}")
        if value is not None:
            env[name] = value
        elif name not in env:
            env[name] = ""
    return env


def _files(folder: Path, values: Mapping[str, str], volume: Doc, group: int | None) -> Path:
    """A configMap or secret volume's files (items and modes as the kubelet writes them:
    owned by root and, with an fsGroup, by that group, so a 0640 key is the pod's to read)."""
    folder.mkdir(parents=True, exist_ok=True)
    mode = int(volume.get("defaultMode", 0o644))
    items = volume.get("items") or [{"key": k, "path": k} for k in values]
    for item in items:
        path = folder / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values[item["key"]])
        path.chmod(int(item.get("mode", mode)))
        if group is not None:
            os.chown(path, -1, group)
    folder.chmod(0o755)
    return folder


def _volumes(pod: Pod, objects: Objects, files: Path) -> dict[str, list[str]]:
    """Each volume's mount flags, keyed by name (the mount path is added per mount)."""
    volumes: dict[str, list[str]] = {n: [f"type=volume,source={v}"] for n, v in pod.claims.items()}
    for volume in pod.spec.get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            volumes[name] = ["type=tmpfs,tmpfs-mode=0777" + (f",tmpfs-size={size}" if size else "")]
        elif "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            spec = volume[kind]
            ref = spec["name"] if kind == "configMap" else spec["secretName"]
            store = objects.configmaps if kind == "configMap" else objects.secrets
            if ref not in store:
                raise Pending(f"{kind} {ref!r} not found")
            group = (pod.spec.get("securityContext") or {}).get("fsGroup")
            folder = _files(files / pod.name / name, store[ref], spec, group)
            volumes[name] = [f"type=bind,source={folder},readonly=true"]
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            volumes[name] = [f"type=volume,source={pod.claims.get(claim, claim)}"]
        else:
            raise PodSpecError(f"pod {pod.name}: volume {name!r}: unsupported kind {volume}")
    return volumes


def _security(pod: Pod, image_user: str) -> list[str]:
    podsec: Doc = pod.spec.get("securityContext") or {}
    sec: Doc = {**podsec, **(pod.container.get("securityContext") or {})}
    flags: list[str] = []
    user = sec.get("runAsUser")
    group = sec.get("runAsGroup")
    if user is not None:
        flags += ["--user", f"{user}:{group if group is not None else user}"]
    elif group is not None:
        raise PodSpecError(f"pod {pod.name}: runAsGroup without runAsUser is not supported")
    if sec.get("runAsNonRoot"):
        effective = str(user) if user is not None else image_user.split(":")[0]
        if not effective.isdigit() or int(effective) == 0:
            raise PodSpecError(
                f"pod {pod.name}: runAsNonRoot, but the image runs as {effective or 'root'!r} "
                "(a kubelet refuses to start it: the user must be numeric and not 0)"
            )
    for gid in [podsec.get("fsGroup"), *(podsec.get("supplementalGroups") or [])]:
        if gid is not None:
            flags += ["--group-add", str(gid)]
    if sec.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # no /tmp unless the pod mounts one
    if sec.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if sec.get("privileged"):
        raise PodSpecError(f"pod {pod.name}: privileged containers are not run here")
    caps = sec.get("capabilities") or {}
    flags += [f"--cap-drop={c.lower()}" for c in caps.get("drop") or []]
    flags += [f"--cap-add={c.lower()}" for c in caps.get("add") or []]
    seccomp = (sec.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise PodSpecError(f"pod {pod.name}: seccomp profile {seccomp} is not supported")
    return flags


def _memory(pod: Pod) -> list[str]:
    limit = ((pod.container.get("resources") or {}).get("limits") or {}).get("memory")
    if not limit:
        return []
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", str(limit))
    if not match:
        raise PodSpecError(f"pod {pod.name}: memory limit {limit!r} not understood")
    unit = {"Ki": "k", "Mi": "m", "Gi": "g", "K": "k", "M": "m", "G": "g", None: "b"}
    return ["--memory", f"{match.group(1)}{unit[match.group(2)]}"]


@dataclass(frozen=True)
class Run:
    """Everything ``ENGINE run`` needs for one pod: flags, the image and what follows it."""

    flags: list[str]
    image: str
    args: list[str]
    env: dict[str, str]


def plan(pod: Pod, objects: Objects, *, image_user: str, files: Path) -> Run:
    """Translate the pod; :class:`Pending` while a Secret or ConfigMap it needs is missing."""
    container = pod.container
    env = environment(pod, objects)
    volumes = _volumes(pod, objects, files)
    flags = ["--hostname", pod.name]
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise PodSpecError(
                f"pod {pod.name}: volumeMount {mount['name']!r} names no volume of the pod"
            )
        if mount.get("subPath"):
            raise PodSpecError(f"pod {pod.name}: subPath mounts are not supported")
        spec = volumes[mount["name"]][0] + f",destination={mount['mountPath']}"
        if mount.get("readOnly") and "readonly=true" not in spec:
            spec += ",readonly=true"
        flags += ["--mount", spec]
    flags += _security(pod, image_user)
    flags += _memory(pod)
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if command:
        flags += ["--entrypoint", json.dumps(command)]
    if container.get("workingDir"):
        flags += ["--workdir", container["workingDir"]]
    return Run(flags=flags, image=container["image"], args=args, env=env)
