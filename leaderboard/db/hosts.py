"""Connect to whichever host of a multi-host DSN is the writable primary, each host with its
own deadline, staggered.

asyncpg tries the hosts of ``postgresql://u:p@h1,h2,h3/db`` one after the other under *one*
deadline. A host that drops packets (a partitioned node, a primary behind a dead link) takes
the whole deadline, so no connection ever reaches the new primary behind it: the chaos drill
found writes blocked for as long as the old primary stayed partitioned. libpq gives every host
its own ``connect_timeout``; we do that and more, as Happy Eyeballs does for addresses
(RFC 8305): the host that answered as primary last time is tried first, the next one starts
when the previous fails or has not answered within ``stagger_s``, and the first that accepts
writes wins; every other attempt is cancelled and any connection it made is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

STAGGER_S = 0.5


def per_host(dsn: str) -> list[str]:
    """One DSN per host of a URI DSN (``[dsn]`` when it names one host, or is no URI)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql") or "," not in parts.netloc:
        return [dsn]
    credentials, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{credentials}@" if credentials else ""
    return [urlunsplit(parts._replace(netloc=prefix + host)) for host in hosts.split(",")]


class PrimaryConnector:
    """The ``connect`` of an asyncpg pool (or a plain call) for a multi-host DSN."""

    def __init__(self, dsn: str, *, stagger_s: float = STAGGER_S) -> None:
        self.hosts = per_host(dsn)
        self.stagger_s = stagger_s
        self.first = 0  # the host that was primary last time

    async def __call__(self, dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        """``dsn`` is the pool's own (the one this connector was made for); each host gets
        asyncpg's ``timeout`` for itself."""
        if len(self.hosts) == 1:
            return await asyncpg.connect(self.hosts[0], **kwargs)
        order = self.hosts[self.first :] + self.hosts[: self.first]
        index, conn = await self._race(order, kwargs)
        self.first = self.hosts.index(order[index])
        return conn

    async def _race(
        self, order: list[str], kwargs: dict[str, Any]
    ) -> tuple[int, asyncpg.Connection]:
        async def attempt(i: int) -> tuple[int, asyncpg.Connection]:
            return i, await asyncpg.connect(order[i], **kwargs)

        pending: set[asyncio.Task[tuple[int, asyncpg.Connection]]] = set()
        errors: list[BaseException] = []
        won: tuple[int, asyncpg.Connection] | None = None
        try:
            for i in range(len(order)):
                pending.add(asyncio.create_task(attempt(i)))
                done, pending = await asyncio.wait(
                    pending, timeout=self.stagger_s, return_when=asyncio.FIRST_COMPLETED
                )
                if (won := _first_connection(done, errors)) is not None:
                    return won
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if (won := _first_connection(done, errors)) is not None:
                    return won
        finally:
            for task in pending:
                task.cancel()
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(result, tuple):  # connected just before it was cancelled
                    result[1].terminate()
        # Every host refused, timed out or is a standby: the most telling error (a host
        # that answered says more than one that timed out).
        answered = [e for e in errors if not isinstance(e, (TimeoutError, OSError))]
        raise (answered or errors)[-1]


def _first_connection(
    done: set[asyncio.Task[tuple[int, asyncpg.Connection]]], errors: list[BaseException]
) -> tuple[int, asyncpg.Connection] | None:
    """The earliest host's connection among finished attempts; close the rest."""
    won: tuple[int, asyncpg.Connection] | None = None
    for task in sorted(done, key=lambda t: t.result()[0] if not t.exception() else 1 << 30):
        if (error := task.exception()) is not None:
            errors.append(error)
        elif won is None:
            won = task.result()
        else:
            with contextlib.suppress(Exception):
                task.result()[1].terminate()
    return won


async def connect_primary(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection to the writable primary of ``dsn`` (see the module's docstring)."""
    return await PrimaryConnector(dsn)(**kwargs)
