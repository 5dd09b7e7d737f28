"""``leaderboard drill failover --kube``: the same drill (:mod:`.drill`, same load, same
measurements) against a cluster, through kubectl and the PostgresCluster the operator keeps.

- the fault: ``kubectl delete pod <primary> --grace-period=0 --force`` (kill), SIGSTOP of the
  postmaster through ``kubectl exec`` (hang, SIGCONT after the failover), or the deletion of a
  replica's pod (standby);
- detection and promotion: the operator's Events (``Promote``, ``Promoted``); their names
  carry the nanosecond they were recorded, finer than the Events' timestamps;
- lost writes: the drill's users looked up on the new primary with ``kubectl exec ... psql``.

The writers need the API from where the drill runs: ``kubectl port-forward svc/<release>-api
8000:80`` and ``--api-url http://127.0.0.1:8000`` (the default). docs/runbook-failover.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from leaderboard_tools.operator.drill import Fault


class KubeTarget:
    def __init__(
        self, *, namespace: str, cluster: str, api_url: str, database: str = "leaderboard"
    ) -> None:
        self.namespace = namespace
        self.cluster = cluster
        self._api_url = api_url
        self.database = database

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "-n", self.namespace, *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def api_url(self) -> str:
        return self._api_url

    async def members(self) -> tuple[str | None, dict[str, str]]:
        found: dict[str, Any] = json.loads(
            await self.kubectl("get", "postgrescluster", self.cluster, "-o", "json")
        )
        status = found.get("status") or {}
        roles = {m["name"]: m["role"] for m in status.get("members", [])}
        return status.get("currentPrimary"), roles

    async def inject(self, fault: Fault, victim: str) -> None:
        if fault == "hang":
            await self.kubectl("exec", victim, "-c", "postgres", "--", "kill", "-STOP", "1")
        else:
            await self.kubectl(
                "delete", "pod", victim, "--grace-period=0", "--force", "--wait=false"
            )

    async def heal(self, fault: Fault, victim: str) -> None:
        if fault == "hang":  # the operator deleted the pod: nothing may be left to wake
            with contextlib.suppress(RuntimeError):
                await self.kubectl("exec", victim, "-c", "postgres", "--", "kill", "-CONT", "1")

    async def decisions(self, since: float) -> dict[str, float]:
        events: dict[str, Any] = json.loads(
            await self.kubectl(
                "get", "events", "-o", "json",
                "--field-selector", f"involvedObject.name={self.cluster}",
            )
        )  # fmt: skip
        found: dict[str, float] = {}
        for event in events.get("items", []):
            at = _recorded_at(event["metadata"]["name"])
            reason = {"Promote": "promote", "Promoted": "promoted"}.get(event.get("reason", ""))
            if reason and at is not None and at >= since:
                found[reason] = min(found.get(reason, at), at)
        return found

    async def stored(self, primary: str, users: list[str]) -> set[str]:
        if not users:
            return set()
        listed = ",".join("'" + u.replace("'", "''") + "'" for u in users)
        query = f"SELECT user_id FROM completions WHERE user_id IN ({listed})"  # noqa: S608
        out = await self.kubectl(
            "exec", "-i", primary, "-c", "postgres", "--",
            "psql", "-U", "postgres", "-d", self.database, "-Atq", "-f", "-",
            stdin=query,
        )  # fmt: skip
        return set(out.split())


def _recorded_at(name: str) -> float | None:
    """The operator names its Events ``<cluster>.<time_ns in hex>``."""
    try:
        return int(name.rsplit(".", 1)[1], 16) / 1e9
    except (IndexError, ValueError):
        return None
