"""The local stack through its command line, as a newcomer uses it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from tests.support import REPO, cli, listening_ports, pid_exists, stack_env, wait_until

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STATUS_KEYS = {"api_url", "ws_url", "redis_url", "database_url", "primary", "members"}


def _status(env: dict[str, str]) -> dict[str, Any]:
    done = cli("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def _processes_and_ports(status: dict[str, Any], env: dict[str, str]) -> tuple[list[int], set[int]]:
    pids = [m["pid"] for m in status["members"]] + [status["redis_pid"], status["supervisor_pid"]]
    pids += [svc["pid"] for svc in status["services"]]
    ports = {m["port"] for m in status["members"]} | {int(env["LEADERBOARD_REDIS_PORT"])}
    ports |= {int(env["LEADERBOARD_API_PORT"]), int(env["LEADERBOARD_WS_PORT"])}
    return pids, ports


def _assert_nothing_left(pids: list[int], ports: set[int]) -> None:
    alive = [p for p in pids if pid_exists(p)]
    assert alive == [], f"processes left behind: {alive}"
    assert not ports & listening_ports(), f"ports still listening: {ports & listening_ports()}"


async def _query(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_up_detach_status_down_and_purge(run_dir: Path) -> None:
    env = stack_env(run_dir)
    started = time.monotonic()
    done = cli("up", "--detach", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    print(f"up --detach took {time.monotonic() - started:.1f} s")  # reported, not asserted

    status = _status(env)
    assert status.keys() >= STATUS_KEYS
    assert status["primary"] == "member0"
    members = [(m["name"], m["role"], m["port"]) for m in status["members"]]
    pg_port = int(env["LEADERBOARD_PG_PORT"])
    assert members == [("member0", "primary", pg_port), ("member1", "replica", pg_port + 1)]
    assert all(pid_exists(m["pid"]) for m in status["members"])
    assert status["database_url"].endswith(f"@127.0.0.1:{pg_port}/leaderboard")
    assert status["redis_url"] == f"redis://127.0.0.1:{env['LEADERBOARD_REDIS_PORT']}/0"

    # The API runs in the stack and takes a completion signed with the dev key.
    assert [svc["name"] for svc in status["services"]] == ["api", "broadcaster"]
    token = cli("token", "newcomer", env=env).stdout.strip()
    done_http = httpx.post(
        status["api_url"] + "/api/action/complete",
        json={"actionId": "verify-email"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert done_http.status_code == 200, done_http.text
    assert done_http.json()["rank"] == 1

    # Data survives a stop and a start: `down` without --purge keeps it.
    url = status["database_url"]
    asyncio.run(_query(url, "CREATE TABLE kept AS SELECT 42 AS answer"))
    pids, ports = _processes_and_ports(status, env)
    assert cli("down", env=env).returncode == 0
    _assert_nothing_left(pids, ports)
    assert _status(env)["members"][0]["role"] == "down"

    assert cli("up", "--detach", env=env).returncode == 0
    status = _status(env)
    assert asyncio.run(_query(status["database_url"], "SELECT answer FROM kept")) == 42

    pids, ports = _processes_and_ports(status, env)
    done = cli("down", "--purge", env=env)
    assert done.returncode == 0, done.stderr
    _assert_nothing_left(pids, ports)
    assert not run_dir.exists()


def test_ctrl_c_on_a_foreground_stack_leaves_nothing(run_dir: Path) -> None:
    env = stack_env(run_dir)
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leaderboard", "up"],
        env={**base, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status = wait_until(lambda: (s := _status(env))["running"] and s, timeout=60)
        pids, ports = _processes_and_ports(status, env)
        assert ports <= listening_ports()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "Ctrl-C stops everything" in out
        _assert_nothing_left(pids, ports)
    finally:
        if proc.poll() is None:
            proc.kill()
        cli("down", "--purge", env=env)


def test_a_second_up_on_the_same_folder_is_refused(run_dir: Path) -> None:
    env = stack_env(run_dir)
    assert cli("up", "--detach", env=env).returncode == 0
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
        second = subprocess.run(
            [sys.executable, "-m", "leaderboard", "up"],
            env={**base, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert _status(env)["running"]  # the first stack is untouched
    finally:
        cli("down", "--purge", env=env)


def test_token_prints_one_jwt_per_user_signed_with_a_private_dev_key(tmp_path: Path) -> None:
    env = {"LEADERBOARD_RUN_DIR": str(tmp_path)}
    done = cli("token", "alice", "bob", "--ttl", "-30", env=env)
    assert done.returncode == 0, done.stderr
    tokens = done.stdout.split()
    key_file = tmp_path / "dev-jwt.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    claims = [
        jwt.decode(t, key, algorithms=["HS256"], options={"verify_exp": False}) for t in tokens
    ]
    assert [c["sub"] for c in claims] == ["alice", "bob"]
    assert all(c["exp"] < time.time() for c in claims)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(tokens[0], key, algorithms=["HS256"])

    fresh = cli("token", "carol", env=env).stdout.strip()
    assert key_file.read_text().strip() == key  # generated once, then reused
    assert jwt.decode(fresh, key, algorithms=["HS256"])["sub"] == "carol"


def test_the_repository_ignores_the_run_folder() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".run/dev-jwt.key"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "the dev signing key must never be committable"
    assert sys.executable  # keep the interpreter the suite runs under


def test_token_refuses_a_lifetime_the_api_would_refuse(tmp_path: Path) -> None:
    env = {"LEADERBOARD_RUN_DIR": str(tmp_path), "LEADERBOARD_JWT_MAX_LIFETIME_S": "3600"}
    done = cli("token", "alice", "--ttl", "7200", env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert "--ttl 7200 is longer than the API accepts" in done.stderr
