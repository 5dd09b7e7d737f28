"""A multi-host DSN whose first host swallows packets (a partitioned node): asyncpg alone
never gets past it, the connector reaches the primary behind it and remembers it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import asyncpg
import pytest

from leaderboard.db.hosts import PrimaryConnector, per_host
from leaderboard_tools.devstack.stack import Stack


@pytest.fixture
def silent_host() -> Iterator[str]:
    """host:port of a server that accepts TCP and then never says a word (as a host behind
    a partition looks once the handshake got through, or a hung postmaster)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def _dsn(stack: Stack, hosts: list[str]) -> str:
    return (
        f"postgresql://{stack.layout.pg_user}:{stack.app_password}@{','.join(hosts)}/"
        f"{stack.layout.pg_database}?target_session_attrs=read-write"
    )


def _hostport(stack: Stack, i: int) -> str:
    return f"{stack.members[i].host}:{stack.members[i].port}"


def test_per_host_splits_a_uri_and_keeps_the_rest() -> None:
    assert per_host("postgresql://u:p%40@a:1,b:2/db?sslmode=verify-full") == [
        "postgresql://u:p%40@a:1/db?sslmode=verify-full",
        "postgresql://u:p%40@b:2/db?sslmode=verify-full",
    ]
    assert per_host("postgresql://u@a:1/db") == ["postgresql://u@a:1/db"]
    assert per_host("host=a port=1") == ["host=a port=1"]


async def test_a_silent_first_host_does_not_hide_the_primary(
    stack: Stack, silent_host: str
) -> None:
    dsn = _dsn(stack, [silent_host, _hostport(stack, 1), _hostport(stack, 0)])
    with pytest.raises(TimeoutError):  # why this module exists: one deadline for all hosts
        await asyncpg.connect(dsn, timeout=1.5)

    connector = PrimaryConnector(dsn, stagger_s=0.3)
    started = time.monotonic()
    conn = await connector(timeout=1.5)
    took = time.monotonic() - started
    try:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()")
        assert await conn.fetchval("SELECT current_setting('port')::int") == stack.members[0].port
    finally:
        await conn.close()
    assert took < 1.5  # never waited out the silent host
    assert connector.first == 2  # the primary is tried first next time

    conn = await connector(timeout=1.5)  # straight to it
    await conn.close()


async def test_every_host_refusing_raises_the_most_telling_error(
    stack: Stack, silent_host: str
) -> None:
    only_standby = _dsn(stack, [silent_host, _hostport(stack, 1)])
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched):
        await PrimaryConnector(only_standby, stagger_s=0.1)(timeout=1.0)
    with pytest.raises(TimeoutError):
        await PrimaryConnector(_dsn(stack, [silent_host]))(timeout=0.5)
