"""Backups of the local stack: WAL archiving on every start, base backups, the window."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from leaderboard.operator import pgbackrest
from leaderboard.operator.pgbackrest import Repository, config, parse_info
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.local import LocalOperator
from tests.conftest import own_cluster
from tests.objectstore import moto_s3
from tests.support import cli, eventually, stack_env, wait_until


def _parse(when: str) -> dt.datetime:
    return dt.datetime.fromisoformat(when.replace("Z", "+00:00"))


def test_an_s3_repository_is_configured_with_path_style_https_and_its_ca() -> None:
    repo = Repository(
        s3_endpoint="127.0.0.1:9443",
        s3_bucket="scores",
        s3_key="id",
        s3_key_secret="secret",
        s3_ca_file=Path("/ca.pem"),
        retention_full=3,
    )
    lines = config(repo, work_dir=Path("/w")).splitlines()
    for expected in [
        "repo1-type=s3",
        "repo1-s3-endpoint=127.0.0.1",
        "repo1-storage-port=9443",
        "repo1-s3-bucket=scores",
        "repo1-s3-uri-style=path",
        "repo1-storage-ca-file=/ca.pem",
        "repo1-retention-full=3",
        "spool-path=/w/spool",
        "[leaderboard]",
    ]:
        assert expected in lines
    assert not any(line.startswith("repo1-path=/") and "leaderboard" not in line for line in lines)


def test_info_becomes_the_backups_contract() -> None:
    info = parse_info(
        [
            {
                "name": "leaderboard",
                "status": {"code": 0, "message": "ok"},
                "archive": [{"min": "000000010000000000000002", "max": "00000002000000000000000A"}],
                "backup": [
                    {
                        "label": "20261205-045521F",
                        "timestamp": {"start": 1796446521, "stop": 1796446524},
                        "info": {
                            "size": 30_000_000,
                            "repository": {"size": 6_000_000, "delta": 6_066_022},
                        },
                        "lsn": {"start": "0/2000028", "stop": "0/2000100"},
                    }
                ],
            }
        ]
    )
    assert [b.to_json() for b in info.backups] == [
        {
            "id": "20261205-045521F",
            "started_at": "2026-12-05T04:55:21Z",
            "finished_at": "2026-12-05T04:55:24Z",
            "bytes": 6_066_022,
        }
    ]
    assert (info.archive_min, info.archive_max, info.status) == (
        "000000010000000000000002",
        "00000002000000000000000A",
        "ok",
    )
    assert parse_info([]).status == "missing stanza"


async def test_the_primary_archives_and_a_backup_with_its_wal_covers_later_writes(
    stack: Stack,
) -> None:
    primary = stack.members[0]
    backup_id = await asyncio.to_thread(stack.backups.backup, primary)
    conn = await primary.connect(stack.superuser_password)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS archived (at timestamptz)")
        await conn.execute("INSERT INTO archived VALUES (now())")
        written = dt.datetime.now(dt.UTC)
    finally:
        await conn.close()
    before = (await asyncio.to_thread(stack.backups.info)).archive_max
    flushed = await asyncio.to_thread(stack.backups.flush, primary)
    info = await asyncio.to_thread(stack.backups.info)
    assert info.status == "ok"
    assert backup_id in [b.id for b in info.backups]
    assert before is not None and info.archive_max is not None and info.archive_max > before
    window = stack.backups.window(info)
    assert _parse(window["recoverable_until"]) == flushed >= written
    assert _parse(window["recoverable_from"]) <= written + dt.timedelta(seconds=1)


@pytest.mark.slow
def test_backup_and_backups_through_the_command_line(run_dir: Path) -> None:
    env = stack_env(run_dir)
    assert cli("up", "--detach", env=env).returncode == 0
    try:
        assert "no backup yet" in cli("backups", env=env).stdout
        done = cli("backup", "--json", env=env)
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        assert made.keys() == {"id", "started_at", "finished_at", "bytes"} and made["bytes"] > 0
        status = json.loads(cli("status", "--json", env=env).stdout)
        _complete(status["api_url"], env, "archived-user")
        acknowledged = dt.datetime.now(dt.UTC)
        done = cli("backups", "--json", env=env)
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert listed["backups"] == [made]
        start, end = _parse(listed["recoverable_from"]), _parse(listed["recoverable_until"])
        assert start <= acknowledged <= end
    finally:
        assert cli("down", "--purge", env=env).returncode == 0


async def test_archiving_follows_the_primary_through_a_failover() -> None:
    async with own_cluster("lb-archive-") as cluster, LocalOperator(cluster, "member0") as operator:
        password = cluster.superuser_password
        await operator.round()  # member1 seen as the synchronous candidate
        cluster.members[0].kill()

        async def promoted() -> bool:
            await operator.round()
            return await cluster.members[1].probe_role(password) == "primary"

        await eventually(promoted, timeout=60, interval=0.2)
        await operator.settle()  # the hand-over of what member1 received, started in the background
        events = operator.events_path.read_text()
        assert '"action": "archived", "target": "member1"' in events, events
        await asyncio.to_thread(cluster.backups.flush, cluster.members[1])
        info = await asyncio.to_thread(cluster.backups.info)
        assert info.archive_max is not None and int(info.archive_max[:8], 16) >= 2  # timeline
        history = cluster.backups.dir / "repo" / "archive" / "leaderboard"
        assert list(history.glob("*/00000002.history*")), "the new timeline's history is archived"


def _complete(api_url: str, env: dict[str, str], user: str) -> None:
    token = cli("token", user, env=env).stdout.strip()
    answer = httpx.post(
        api_url + "/api/action/complete",
        json={"actionId": "verify-email"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def _ranked(api_url: str) -> set[str]:
    """The users the API ranks, polled until it has rebuilt from PostgreSQL."""
    answer = httpx.get(api_url + "/api/leaderboard", timeout=10)
    assert answer.status_code == 200, answer.text
    return {entry["userId"] for entry in answer.json()["top"]}


@pytest.mark.slow
def test_restore_latest_and_to_a_time_between_two_batches_around_a_failover(
    run_dir: Path,
) -> None:
    env = stack_env(run_dir)
    assert cli("up", "--detach", env=env).returncode == 0
    try:
        assert cli("backup", env=env).returncode == 0
        api = json.loads(cli("status", "--json", env=env).stdout)["api_url"]
        _complete(api, env, "before-1")
        _complete(api, env, "before-2")
        target = dt.datetime.now(dt.UTC)
        assert cli("switchover", "member1", env=env).returncode == 0
        _complete(api, env, "after-1")

        done = cli("restore", "--latest", "--json", env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        restored = json.loads(done.stdout)
        assert restored.keys() == {"target", "recovered_to", "seconds"}
        want = {"before-1", "before-2", "after-1"}
        wait_until(lambda: _ranked(api) == want, timeout=30)

        done = cli(
            "restore", "--target-time", pgbackrest.iso(target), "--json", env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        wait_until(lambda: _ranked(api) == {"before-1", "before-2"}, timeout=30)
        _complete(api, env, "after-restore")  # writable, and ranked
        roles = [m["role"] for m in json.loads(cli("status", "--json", env=env).stdout)["members"]]
        assert roles == ["primary", "replica"]  # the clone does not stop at the target too

        listed = json.loads(cli("backups", "--json", env=env).stdout)
        assert _parse(listed["recoverable_from"]) <= target <= _parse(listed["recoverable_until"])
        too_early = cli("restore", "--target-time", "2001-01-01T00:00:00Z", env=env)
        assert too_early.returncode == 1
        assert (
            too_early.stderr.count("\n") == 1
            and "outside the recoverable window" in too_early.stderr
        )
        assert any((run_dir / "replaced").iterdir()), "the replaced data is kept aside"
    finally:
        assert cli("down", "--purge", env=env).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("repository", ["folder", "s3"])
def test_the_restore_drill_passes_and_reports_each_restore(run_dir: Path, repository: str) -> None:
    """The whole drill, with the repository a folder under the run dir or a bucket of a real
    S3 server (moto, over HTTPS with its own CA)."""
    with contextlib.ExitStack() as scope:
        env = stack_env(run_dir)
        store = None
        if repository == "s3":
            store = scope.enter_context(moto_s3(run_dir.parent / f"{run_dir.name}-s3"))
            env |= store.env(prefix="/drill")
        assert cli("up", "--detach", env=env).returncode == 0
        scope.callback(lambda: cli("down", "--purge", env=env))
        done = cli("drill", "restore", "--json", env=env, timeout=600)
        assert done.returncode == 0, done.stderr + done.stdout
        drill = json.loads(done.stdout)
        assert drill["passed"] and drill["acknowledged"] > 0
        latest, to_target = drill["steps"]
        assert latest["restore"] == "latest" and latest["expected"] == drill["acknowledged"]
        assert to_target["restore"] == drill["target"]
        assert 0 < to_target["expected"] < drill["acknowledged"]
        for step in drill["steps"]:
            assert step["missing"] == step["unexpected"] == 0 and step["ranking_equal"]
            assert step["seconds"] > 0 and step["wal_bytes"] > 0
        folder = run_dir / "backups" / "repo"
        if store is None:
            assert (folder / "backup" / pgbackrest.STANZA / "backup.info").exists()
        else:  # everything went to the bucket, nothing to the folder
            keys = store.keys("drill/")
            assert f"drill/backup/{pgbackrest.STANZA}/backup.info" in keys
            assert any(k.endswith(".lz4") and "/archive/" in k for k in keys), keys[:5]
            assert not folder.exists()
        window = json.loads(cli("backups", "--json", env=env).stdout)
        assert window["backups"] and window["recoverable_from"] <= drill["target"]


async def test_segments_the_dead_primary_had_not_archived_are_pushed_by_its_successor() -> None:
    """With ``archive_mode = on`` a standby takes what it streams as archived already: the
    segments a primary closed but had not pushed when it died were missing for good."""
    async with own_cluster("lb-gap-") as cluster, LocalOperator(cluster, "member0") as operator:
        password = cluster.superuser_password
        await operator.round()  # member1 seen as the synchronous candidate
        conn = await cluster.members[0].connect(password)
        try:  # its archiver stops: what it closes from now on is on the standby only
            archiver = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"
            )
            os.kill(archiver, signal.SIGSTOP)
            closed = []
            for _ in range(3):
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS gap (n int); INSERT INTO gap VALUES (1)"
                )
                closed.append(await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())"))
                await conn.execute("SELECT pg_switch_wal()")
            # Acknowledged once the standby has it, so it has every segment closed before
            # (a switch record alone is not waited for: the last one could be partial there).
            await conn.execute("INSERT INTO gap VALUES (2)")
        finally:
            conn.terminate()
        os.kill(archiver, signal.SIGKILL)
        cluster.members[0].kill()
        repo = cluster.backups.dir / "repo" / "archive" / "leaderboard"
        assert not any(list(repo.glob(f"*/*/{name}-*")) for name in closed)

        async def handed_over() -> bool:
            await operator.round()
            return '"archived"' in operator.events_path.read_text()

        await eventually(handed_over, timeout=60, interval=0.2)
        for name in closed:
            assert list(repo.glob(f"*/*/{name}-*")), f"{name} is missing from the repository"
        assert "pushing the WAL it received failed" not in operator.events_path.read_text()


def test_with_archiving_off_the_backup_commands_say_so_in_one_line(run_dir: Path) -> None:
    env = {**stack_env(run_dir), "LEADERBOARD_BACKUP_ARCHIVING": "false"}
    for command in (["backup"], ["backups"], ["restore", "--latest"], ["drill", "restore"]):
        done = cli(*command, env=env)
        assert done.returncode == 1, command
        assert done.stderr.strip().splitlines() == [
            "leaderboard: WAL archiving is off (LEADERBOARD_BACKUP_ARCHIVING=false)"
        ], command


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"cluster": "local"})


async def test_a_repository_that_goes_away_shows_in_the_metrics_the_alerts_read() -> None:
    async with own_cluster("lb-archfail-") as cluster:
        operator = LocalOperator(cluster, "member0")  # no promotion: nothing to settle
        watching = asyncio.create_task(operator.watch_backups(every_s=0.1))
        try:
            await asyncio.to_thread(cluster.backups.backup, cluster.members[0])
            await operator.round()
            assert _gauge("leaderboard_pg_archive_failing") == 0
            assert (_gauge("leaderboard_pg_archive_last_archived_timestamp_seconds") or 0) > 0

            async def repository(up: float) -> bool:
                return _gauge("leaderboard_backup_repository_up") == up

            async def backed_up() -> bool:  # the next look at the repository sees the backup
                return (_gauge("leaderboard_backup_last_success_timestamp_seconds") or 0) > 0

            await eventually(backed_up, timeout=10)
            assert await repository(1)

            repo = cluster.backups.dir / "repo"
            repo.rename(repo.with_name("repo-away"))  # as a lost mount or bucket would
            conn = await cluster.members[0].connect(cluster.superuser_password)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS lost (n int)")
                await conn.execute("INSERT INTO lost VALUES (1); SELECT pg_switch_wal()")
            finally:
                await conn.close()

            async def failing() -> bool:
                await operator.round()
                return _gauge("leaderboard_pg_archive_failing") == 1

            await eventually(failing, timeout=60, interval=0.2)
            await eventually(lambda: repository(0), timeout=10)
            assert (_gauge("leaderboard_pg_archive_ready_segments") or 0) >= 1
        finally:
            watching.cancel()
