"""kmock's Kubernetes emulator with the gaps that matter here filled (see TOOLCHAIN.md):

- ``resourceVersion`` is bumped on every write, and a write that carries a stale one gets 409
  (the compare-and-swap the operator's Lease relies on);
- ``generateName`` is filled in;
- errors are sent as ``application/json`` exactly, so clients (lightkube) parse the Status.

Label selectors stay ignored (the operator filters pods itself).
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

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        response = await super()._render_error(exc)
        response.content_type = "application/json"
        response.charset = None
        return response


class _Conflict(kmock.KubernetesError):
    status = 409
    reason = "Conflict"
    message = "the object has been modified; please apply your changes to the latest version"
