"""A Service's virtual address for ``make chart-up``: what kube-proxy does for a ClusterIP.

The container running this carries the Service's DNS names; each Service port it listens on
is forwarded, connection by connection, to the target port of one of the pods the Service's
selector picks (round robin, the next one when a pod refuses). A Service whose port differs
from its pods' (``80 -> 8000``) works as in a cluster, which DNS names on the pods alone could
not do. The endpoints are read from a JSON file at each connection, so whoever owns the
labels can move them without restarting the proxy:

    {"ports": [{"port": 80, "targets": [["leaderboard-api-0", 8000]]}]}

No connection is made when a Service has no endpoint: the client's connect is refused, as
kube-proxy rejects it.

    python serviceproxy.py /etc/lb/endpoints.json   (mounted into the image's Python: stdlib only)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("serviceproxy")
CONNECT_TIMEOUT_S = 2.0


class Endpoints:
    """The file's targets for one port, re-read when it changed."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self._mtime = -1.0
        self._targets: list[tuple[str, int]] = []
        self._turn = itertools.count()

    def targets(self) -> list[tuple[str, int]]:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            spec = json.loads(self.path.read_text())
            entry: dict[str, Any] = next(
                (p for p in spec["ports"] if p["port"] == self.port), {"targets": []}
            )
            self._targets = [(str(host), int(port)) for host, port in entry["targets"]]
            self._mtime = mtime
        if not self._targets:
            return []
        start = next(self._turn) % len(self._targets)
        return self._targets[start:] + self._targets[:start]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _open(endpoints: Endpoints) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for host, port in endpoints.targets():
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            log.warning("port %d: %s:%d refused: %s", endpoints.port, host, port, error)
    raise ConnectionRefusedError(f"no endpoint answers for port {endpoints.port}")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _handler(endpoints: Endpoints) -> Handler:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await _open(endpoints)
        except ConnectionRefusedError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                writer.close()

    return handle


async def serve(path: Path, spec: dict[str, Any]) -> None:
    servers = []
    for entry in spec["ports"]:
        endpoints = Endpoints(path, int(entry["port"]))
        servers.append(await asyncio.start_server(_handler(endpoints), "0.0.0.0", endpoints.port))  # noqa: S104
        log.info("forwarding port %d", endpoints.port)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        path = Path(sys.argv[1])
        asyncio.run(serve(path, json.loads(path.read_text())))


if __name__ == "__main__":
    main()
