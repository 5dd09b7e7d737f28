import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from leaderboard.db import migrate as migrate_module
from leaderboard.db.migrate import Migration, MigrationError, load_migrations, migrate
from leaderboard_tools.devstack.stack import Stack


@pytest_asyncio.fixture
async def empty_database(stack: Stack) -> AsyncIterator[str]:
    """A new, empty database on the primary, owned by the application role; dropped after."""
    name = f"migrate_{secrets.token_hex(4)}"
    admin = await stack.members[0].connect(stack.superuser_password)
    await admin.execute(f'CREATE DATABASE {name} OWNER "{stack.layout.pg_user}"')
    url = stack.database_url(stack.members[0]).rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_ten_pods_starting_at_once_apply_each_migration_once(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(10)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        expected = [m.version for m in load_migrations()]
        assert sorted(v for applied in results for v in applied) == expected
        assert sum(1 for applied in results if applied) == 1
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == expected
        tables = {
            r["tablename"]
            for r in await conns[0].fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname='public'"
            )
        }
        assert {"actions", "scores", "completions", "schema_migrations"} <= tables
    finally:
        for c in conns:
            await c.close()


async def test_a_second_start_applies_nothing(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        assert await migrate(conn) != []
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in load_migrations()]
        monkeypatch.setattr(migrate_module, "load_migrations", lambda: edited)
        with pytest.raises(MigrationError, match="was edited after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = [*load_migrations(), Migration("9999", "broken", "CREATE TABLE x (); SELECT 1/0;")]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: broken)
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn)
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
        assert await conn.fetchval("SELECT to_regclass('actions')") is None
    finally:
        await conn.close()
