"""``leaderboard operator``: start the Kubernetes shell the way a pod needs it.

Before kopf starts, the operator waits for the Kubernetes API: no configuration (no service
account in the pod, no kubeconfig), an API that does not answer, or one that refuses the
credentials is one warning line per try, with the reason and the next delay (1 s doubling to
30 s), never a trace, and it keeps trying. Liveness (``/healthz``) answers from the first
second, waiting or not: restarting the pod would not bring the API back, and a crash loop
would only hide the reason. ``/healthz`` says which state it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import httpx2
import kopf
import uvloop
from aiohttp import web
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig

from leaderboard.operator.kube import loop  # noqa: F401 (registers the kopf handlers)
from leaderboard.operator.kube.shell import PostgresCluster

log = logging.getLogger("leaderboard.operator")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0


class ApiState:
    """What the liveness endpoint reports: waiting for the API (and why), or running."""

    def __init__(self) -> None:
        self.connected = False
        self.reason = "starting"

    async def healthz(self, _: web.Request) -> web.Response:
        if self.connected:
            return web.json_response({"status": "ok", "kubernetes": "connected"})
        return web.json_response({"status": "ok", "kubernetes": "waiting", "reason": self.reason})


def _server(config: KubeConfig | None) -> str:
    try:
        single = config.get() if config else None
    except ConfigError:
        return "?"
    return (single.cluster.server if single else None) or "?"


async def connect(namespace: str | None, state: ApiState) -> AsyncClient:
    """A client that has listed the PostgresClusters once; retries until the API answers."""
    delay = RETRY_FIRST_S
    while True:
        config: KubeConfig | None = None
        try:
            config = KubeConfig.from_env()
            client = AsyncClient(config, timeout=httpx2.Timeout(5.0))
            async for _ in client.list(PostgresCluster, namespace=namespace or "*"):
                break
            state.connected = True
            log.info("connected to the Kubernetes API at %s", _server(config))
            return client
        except ConfigError as error:
            state.reason = (
                "no Kubernetes API configured (no service account token in the pod, "
                f"no KUBECONFIG): {error}"
            )
        except ApiError as error:
            status = error.status
            state.reason = (
                f"the Kubernetes API at {_server(config)} refused: "
                f"{status.code} {status.reason or ''} {status.message or ''}".strip()
            )
        except (httpx2.HTTPError, OSError) as error:
            state.reason = (
                f"the Kubernetes API at {_server(config)} is unreachable: "
                f"{type(error).__name__}: {error or 'no answer'}"
            )
        log.warning("waiting for the Kubernetes API: %s; retrying in %.0f s", state.reason, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)


async def main(health_port: int, namespace: str | None) -> None:
    state = ApiState()
    app = web.Application()
    app.router.add_get("/healthz", state.healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", health_port).start()  # noqa: S104 (a pod's probe)
    try:
        client = await connect(namespace, state)
        memo: Any = kopf.Memo(client=client)
        await kopf.operator(
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else [],
            standalone=True,
            memo=memo,
        )
    finally:
        await runner.cleanup()


def run(metrics_port: int, health_port: int) -> None:
    """The PostgresClusters of its own namespace (``POD_NAMESPACE``, so a namespaced Role
    suffices), or of every namespace when that is not set."""
    from prometheus_client import start_http_server

    start_http_server(metrics_port)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in a terminal: no trace
        uvloop.run(main(health_port, os.environ.get("POD_NAMESPACE")))
