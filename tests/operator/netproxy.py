"""A TCP proxy the kmock tests route through, to emulate the network between "nodes": the
-rw Service (each new connection to whichever pod is labelled primary, open connections
staying where they are, as kube-proxy does), and a node's link to the API server, which a
node loss cuts (open connections dropped, new ones refused)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tests.support import free_ports

Route = Callable[[], "tuple[str, int] | None"]


class Proxy:
    def __init__(self, route: Route) -> None:
        self.route = route
        self.port = free_ports(1)[0]
        self.connections: list[tuple[str, int]] = []  # where each connection went
        self.cut = False
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.sever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sever(self) -> None:
        """Cut: drop every open connection and refuse new ones until :meth:`heal`."""
        self.cut = True
        for writer in list(self._open):
            writer.transport.abort()

    def heal(self) -> None:
        self.cut = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = None if self.cut else self.route()
        if target is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.transport.abort()
            return
        self.connections.append(target)
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}
