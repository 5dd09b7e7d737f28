"""kmock's Kubernetes emulator with the gaps that matter here filled (see TOOLCHAIN.md):

- ``resourceVersion`` is bumped on every write, and a write that carries a stale one gets 409
  (the compare-and-swap the operator's Lease relies on);
- ``generateName`` is filled in;
- errors are sent as ``application/json`` exactly, so clients (lightkube) parse the Status;
- what the real ``kubectl`` needs: lists carry their ``kind`` (``PodList``) and ``apiVersion``,
  the core group's discovery says ``groupVersion: v1`` (kmock says ``/v1``, and kubectl then
  maps ``pods`` to another group's), and subresources carry no short names (kmock repeats the
  resource's, and kubectl warns that ``pgc`` is ambiguous).

Label selectors of lists are honoured for equality and existence (``a=b``, ``a!=b``, ``a``), the
forms kubectl's ``-l`` and the operator use; set-based ones (``in``, ``notin``) are ignored.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import rendering

_versions = itertools.count(1)


class Emulator(kmock.KubernetesEmulator):
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, list):  # a JSON patch
            version = str(next(_versions))
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )
        if request.resource is not None and isinstance(request.data, dict):
            meta: dict[str, Any] = request.data.setdefault("metadata", {})
            if request.action is kmock.action.UPDATE and request.name is not None:
                given = meta.get("resourceVersion")
                key = (request.resource, request.namespace, request.name)
                if given is not None and key in self.objects and not self.objects[key].deleted:
                    stored = self.objects[key].get("metadata", {}).get("resourceVersion")
                    if given != stored:
                        return await self._render_error(_Conflict())
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                meta["resourceVersion"] = str(next(_versions))
            if request.action is kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
        return await super()._handle(request)

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        found: dict[str, Any] = await super()._serve_version(request)  # type: ignore[assignment]
        found["groupVersion"] = found["groupVersion"].lstrip("/")
        for entry in found["resources"]:
            if "/" in entry["name"]:
                entry.update(singularName="", shortNames=[], categories=[])
        return found

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        found: dict[str, Any] = await super()._serve_list(request)  # type: ignore[assignment]
        resource = request.resource
        assert resource is not None  # a list is always of a resource
        kind = self.resources[resource].kind or ""
        api_version = f"{resource.group}/{resource.version}".lstrip("/")
        selector = request.params.get("labelSelector", "")
        items = [o for o in found["items"] if _selected(o, selector)]
        return {"apiVersion": api_version, "kind": f"{kind}List", **found, "items": items}

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        response = await super()._render_error(exc)
        response.content_type = "application/json"
        response.charset = None
        return response


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if " " in term:  # set-based: not emulated
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif labels.get(term) is None:
            return False
    return True


class _Conflict(kmock.KubernetesError):
    status = 409
    reason = "Conflict"
    message = "the object has been modified; please apply your changes to the latest version"
