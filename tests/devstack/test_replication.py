"""The local cluster's standby is synchronous: a commit is acknowledged only once it has it."""

import asyncio

import asyncpg

from leaderboard_tools.devstack.stack import Stack
from tests.support import eventually


async def test_the_standby_streams_as_a_synchronous_candidate(stack: Stack) -> None:
    primary, standby = stack.members
    conn = await primary.connect(stack.superuser_password)
    try:
        assert await conn.fetchval("SHOW synchronous_standby_names") == "ANY 1 (*)"
        row = await conn.fetchrow(
            "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
            standby.name,
        )
        assert row is not None
        assert (row["state"], row["sync_state"]) == ("streaming", "quorum")
    finally:
        await conn.close()
    assert await standby.probe_role(stack.superuser_password) == "replica"


async def test_a_commit_is_not_acknowledged_until_the_standby_has_it(stack: Stack) -> None:
    primary, standby = stack.members
    # No command timeout on the writer: waiting for the standby is the behaviour under test.
    writer = await asyncpg.connect(
        host=primary.host,
        port=primary.port,
        user="postgres",
        password=stack.superuser_password,
        database="postgres",
    )
    monitor = await primary.connect(stack.superuser_password)
    try:
        await writer.execute("DROP TABLE IF EXISTS sync_probe; CREATE TABLE sync_probe (id int)")
        backend = await writer.fetchval("SELECT pg_backend_pid()")

        await asyncio.to_thread(standby.stop)
        try:
            insert = asyncio.create_task(writer.execute("INSERT INTO sync_probe VALUES (1)"))

            async def waiting_for_the_standby() -> bool:
                event = await monitor.fetchval(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = $1", backend
                )
                return bool(event == "SyncRep")

            await eventually(waiting_for_the_standby, timeout=10)
            assert not insert.done()
        finally:
            standby.start()
        assert await asyncio.wait_for(insert, timeout=30) == "INSERT 0 1"
        await stack.wait_streaming(primary)

        replica = await standby.connect(stack.superuser_password)
        try:
            assert await replica.fetchval("SELECT count(*) FROM sync_probe WHERE id = 1") == 1
        finally:
            await replica.close()
        await writer.execute("DROP TABLE sync_probe")
    finally:
        writer.terminate()
        await monitor.close()


async def test_the_standby_refuses_writes(stack: Stack) -> None:
    conn = await stack.members[1].connect(stack.superuser_password)
    try:
        try:
            await conn.execute("CREATE TABLE must_fail (id int)")
        except asyncpg.ReadOnlySQLTransactionError:
            pass
        else:
            raise AssertionError("a standby accepted a write")
    finally:
        await conn.close()
