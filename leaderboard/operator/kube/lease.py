"""One active operator per PostgreSQL cluster: a coordination.k8s.io Lease taken with
compare-and-swap.

kopf's peering only makes a standby operator pause its handlers; it is no lock (two instances
started at once both run). The Lease is: acquiring and renewing are patches that carry the
``resourceVersion`` read just before, so of two instances racing for it the API server accepts
one and answers 409 to the other. A holder that cannot renew stops acting before its lease
runs out (``margin_s``), so a new holder never overlaps with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(t: dt.datetime) -> str:
    """MicroTime, as the Lease API wants it."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


class LeaseLock:
    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration_s: int = 15,
        margin_s: float = 3.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.margin_s = min(margin_s, duration_s / 3)  # a short lease keeps some validity
        self._valid_until = 0.0  # monotonic: we may act until then

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def hold(self) -> bool:
        """Acquire or renew; True while this instance is the one that may act."""
        started = time.monotonic()
        try:
            won = await self._try()
        except ApiError as exc:
            if exc.status.code != 409:  # 409: someone else wrote it first
                raise
            won = False
        if won:
            self._valid_until = started + self.duration_s - self.margin_s
        elif not self.held:
            self._valid_until = 0.0
        return self.held

    async def _try(self) -> bool:
        now = _now()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            await self.client.create(
                Lease(
                    metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=LeaseSpec(
                        holderIdentity=self.identity,
                        leaseDurationSeconds=self.duration_s,
                        acquireTime=_micro(now),  # type: ignore[arg-type]
                        renewTime=_micro(now),  # type: ignore[arg-type]
                        leaseTransitions=0,
                    ),
                )
            )
            return True
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        renewed = _parse(spec.renewTime)
        duration = spec.leaseDurationSeconds or self.duration_s
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder not in (None, "", self.identity) and not expired:
            return False
        change: dict[str, object] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_s,
            "renewTime": _micro(now),
        }
        if holder != self.identity:
            change["acquireTime"] = _micro(now)
            change["leaseTransitions"] = (spec.leaseTransitions or 0) + 1
        assert lease.metadata is not None
        await self.client.patch(
            Lease,
            self.name,
            {"metadata": {"resourceVersion": lease.metadata.resourceVersion}, "spec": change},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )
        return True

    async def release(self) -> None:
        """Give the lease up at shutdown, so a successor need not wait for it to expire."""
        if not self.held:
            return
        self._valid_until = 0.0
        with contextlib.suppress(ApiError):  # it expires anyway
            await self.client.patch(
                Lease,
                self.name,
                {"spec": {"holderIdentity": None, "renewTime": None}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
