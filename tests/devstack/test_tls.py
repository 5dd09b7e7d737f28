"""The local stack's TLS mode, against the real servers: nothing answers in plaintext, a
certificate from another CA and a wrong password are refused (and named in one line at start),
each component's Redis user can do its job and nothing more, replication runs over TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis import exceptions as rex

from leaderboard.cache.pipe import RedisPipe
from leaderboard.certs import TlsFiles
from leaderboard.preflight import PreflightError, check_postgres, check_redis
from leaderboard_tools.devstack.stack import Stack
from tests.conftest import _traversable_tmpdir, own_cluster
from tests.support import REPO, component_env, eventually, free_ports, start_component


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tls_stack() -> AsyncIterator[Stack]:
    async with own_cluster("lb-tls-", tls=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def other_ca() -> Iterator[TlsFiles]:
    """A second CA with a certificate for the same address: trusted by nobody here."""
    folder = _traversable_tmpdir("lb-other-ca-")
    files = TlsFiles(folder)
    files.create(["127.0.0.1", "localhost"])
    yield files
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def _with_user(stack: Stack, user: str, password: str) -> str:
    url = stack.redis.url_for(user)
    return url.replace(quote(stack.redis.password(user), safe=""), quote(password, safe=""))


def _swap_ca(url: str, stack: Stack, ca: TlsFiles) -> str:
    assert stack.tls is not None
    return url.replace(quote(str(stack.tls.ca_cert)), quote(str(ca.ca_cert)))


# -- Redis


async def test_redis_answers_only_tls(tls_stack: Stack) -> None:
    plain = aioredis.Redis(host="127.0.0.1", port=tls_stack.redis.port, socket_timeout=2)
    try:
        with pytest.raises(rex.ConnectionError):
            await plain.ping()
    finally:
        await plain.aclose()
    pipe = RedisPipe(f"redis://127.0.0.1:{tls_stack.redis.port}/0", timeout=2)
    try:
        with pytest.raises((rex.ConnectionError, rex.TimeoutError)):
            await pipe.execute("PING")
    finally:
        await pipe.close()


async def test_the_hot_path_pipe_speaks_tls_and_auth(tls_stack: Stack) -> None:
    pipe = RedisPipe(tls_stack.redis.url_for("api"), timeout=2)
    try:
        assert await pipe.execute("PING") == b"PONG"
        assert pipe.ssl is not None and pipe.ssl.verify_mode == ssl.CERT_REQUIRED
        assert pipe.ssl.check_hostname  # redis-py's defaults for rediss://
        assert b" user=api " in await pipe.execute("CLIENT", "INFO")
    finally:
        await pipe.close()


async def test_a_certificate_from_another_ca_is_refused(
    tls_stack: Stack, other_ca: TlsFiles
) -> None:
    url = _swap_ca(tls_stack.redis.url_for("api"), tls_stack, other_ca)
    with pytest.raises(PreflightError, match="certificate is not trusted"):
        await check_redis(url, timeout=2)
    client = aioredis.Redis.from_url(url, socket_timeout=2)
    try:
        with pytest.raises(rex.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_redis_that_asks_for_a_client_certificate_gets_the_urls_one(
    tls_stack: Stack,
) -> None:
    """`ssl_certfile`/`ssl_keyfile` in the URL (a provider that authenticates clients by
    certificate): without them the handshake fails, with them the hot path answers."""
    from leaderboard_tools.devstack.redis import find_redis_server

    assert tls_stack.tls is not None
    files, port = tls_stack.tls, free_ports(1)[0]
    server = await asyncio.create_subprocess_exec(
        find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key), "--tls-ca-cert-file", str(files.ca_cert),
        "--tls-auth-clients", "yes",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    ca = quote(str(files.ca_cert))
    bare = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    with_cert = (
        f"{bare}&ssl_certfile={quote(str(files.server_cert))}"
        f"&ssl_keyfile={quote(str(files.server_key))}"
    )
    try:

        async def answers() -> bool:
            pipe = RedisPipe(with_cert, timeout=2)
            try:
                return bool(await pipe.execute("PING") == b"PONG")
            except (rex.ConnectionError, rex.TimeoutError):
                return False  # not listening yet
            finally:
                await pipe.close()

        await eventually(answers, timeout=10)
        pipe = RedisPipe(bare, timeout=2)
        try:
            with pytest.raises((rex.ConnectionError, rex.TimeoutError)):
                await pipe.execute("PING")
        finally:
            await pipe.close()
    finally:
        server.terminate()
        await server.wait()


def test_a_service_started_by_hand_in_tls_mode_finds_the_stack(tls_stack: Stack) -> None:
    """`LEADERBOARD_TLS=true leaderboard api` with no URLs: the same URLs the stack gives."""
    from leaderboard import connection_urls
    from leaderboard.config import Settings

    settings = Settings(
        run_dir=tls_stack.run_dir, tls=True, redis_port=tls_stack.redis.port,
        pg_port=tls_stack.members[0].port, pg_members=len(tls_stack.members),
    )  # fmt: skip
    assert connection_urls.redis_url(settings, "api") == tls_stack.redis.url_for("api")
    assert connection_urls.database_url(settings) == tls_stack.services_database_url()


async def test_wrong_or_missing_passwords_are_refused(tls_stack: Stack) -> None:
    with pytest.raises(PreflightError, match="refused the password of user 'api'"):
        await check_redis(_with_user(tls_stack, "api", "not-the-password"), timeout=2)
    anonymous = tls_stack.redis.url_for("api").replace(
        f"api:{quote(tls_stack.redis.password('api'), safe='')}@", ""
    )
    with pytest.raises(PreflightError, match="requires a password"):
        await check_redis(anonymous, timeout=2)
    await check_redis(tls_stack.redis.url_for("api"), timeout=2)  # the right one passes


async def test_the_broadcaster_user_may_only_subscribe_and_read(tls_stack: Stack) -> None:
    keys = tls_stack.redis.keys
    client = aioredis.Redis.from_url(tls_stack.redis.url_for("broadcaster"), socket_timeout=2)
    try:
        await client.hget(keys.top10, "message")  # allowed: the last published state
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.updates)  # allowed: the updates channel
        await pubsub.aclose()
        for forbidden in (
            lambda: client.zadd(keys.scores, {"mallory": 1e9}),
            lambda: client.hset(keys.top10, "message", "forged"),
            lambda: client.publish(keys.updates, "forged"),
            lambda: client.zrevrange(keys.scores, 0, 9),
            lambda: client.get("anything-else"),
            client.flushall,
            lambda: client.config_get("*"),
        ):
            with pytest.raises(rex.NoPermissionError):
                await forbidden()
    finally:
        await client.aclose()


async def test_the_api_user_keeps_to_its_keys_and_is_denied_admin_commands(
    tls_stack: Stack,
) -> None:
    keys = tls_stack.redis.keys
    client = aioredis.Redis.from_url(tls_stack.redis.url_for("api"), socket_timeout=2)
    try:
        await client.zadd(keys.scores, {"acl-probe": 0})
        await client.zrem(keys.scores, "acl-probe")
        for forbidden in (
            lambda: client.set("someone-elses-key", "x"),
            client.flushall,
            client.flushdb,
            lambda: client.keys("*"),
            lambda: client.config_set("requirepass", ""),
            lambda: client.acl_setuser("api", enabled=True, nopass=True),
            lambda: client.execute_command("CLIENT", "KILL", "USER", "broadcaster"),
        ):
            with pytest.raises(rex.NoPermissionError):
                await forbidden()
        # scripts run with the caller's permissions: no way around the key patterns
        with pytest.raises(rex.ResponseError, match="can't access at least one of the keys"):
            await client.eval("return redis.call('SET', 'someone-elses-key', 'x')", 0)
        admin = aioredis.Redis.from_url(tls_stack.redis.url)
        assert await admin.exists("someone-elses-key") == 0
        await admin.aclose()
    finally:
        await client.aclose()


# -- PostgreSQL


async def test_postgres_refuses_plaintext_on_every_member(tls_stack: Stack) -> None:
    password = tls_stack.superuser_password
    for member in tls_stack.members:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            await asyncpg.connect(
                f"postgresql://postgres:{password}@127.0.0.1:{member.port}/postgres"
                "?sslmode=disable",
                timeout=5,
            )
    url = tls_stack.services_database_url().replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(PreflightError, match="does not let this connection in"):
        await check_postgres(url, timeout=5)


async def test_postgres_certificate_and_password_are_checked(
    tls_stack: Stack, other_ca: TlsFiles
) -> None:
    url = tls_stack.services_database_url()
    await check_postgres(url, timeout=5)
    with pytest.raises(PreflightError, match="certificate is not trusted"):
        await check_postgres(_swap_ca(url, tls_stack, other_ca), timeout=5)
    with pytest.raises(PreflightError, match="refused the password"):
        await check_postgres(url.replace(tls_stack.app_password, "wrong-password"), timeout=5)


async def test_verify_full_without_a_ca_file_is_refused_at_start(
    tls_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As in libpq: no CA to verify with is a configuration error, not a silent fall-back."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    url = tls_stack.services_database_url().split("&sslrootcert=")[0]
    with pytest.raises(PreflightError, match="root certificate file"):
        await check_postgres(url, timeout=5)


async def test_services_and_replication_connect_over_tls(tls_stack: Stack) -> None:
    conn = await asyncpg.connect(tls_stack.services_database_url(), timeout=5)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    primary = await tls_stack.members[0].connect(tls_stack.superuser_password)
    try:
        rows = await primary.fetch(
            "SELECT r.application_name, s.ssl FROM pg_stat_replication r "
            "JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'"
        )
    finally:
        await primary.close()
    assert {r["application_name"]: r["ssl"] for r in rows} == {"member1": True}


# -- the processes, as a user starts them


def _run(stack: Stack, component: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leaderboard", component],
        env={**component_env(stack, component), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_wrong_password_stops_a_service_at_start_with_one_line(tls_stack: Stack) -> None:
    port = free_ports(1)[0]
    for component, port_var in (
        ("api", "LEADERBOARD_API_PORT"),
        ("broadcaster", "LEADERBOARD_WS_PORT"),
    ):
        url = _with_user(tls_stack, component, "wrong")
        done = _run(tls_stack, component, LEADERBOARD_REDIS_URL=url, **{port_var: str(port)})
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith(f"leaderboard {component}: Redis at rediss://127.0.0.1:")
        assert f"refused the password of user '{component}'" in lines[-1]
        assert "Traceback" not in done.stderr
        assert "wrong" not in lines[-1]  # never print the credentials


def test_an_untrusted_postgres_certificate_stops_the_api_at_start(
    tls_stack: Stack, other_ca: TlsFiles
) -> None:
    url = _swap_ca(tls_stack.services_database_url(), tls_stack, other_ca)
    done = _run(
        tls_stack, "api", LEADERBOARD_DATABASE_URL=url, LEADERBOARD_API_PORT=str(free_ports(1)[0])
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("leaderboard api: PostgreSQL at postgresql://127.0.0.1:")
    assert "certificate is not trusted" in last


async def _set_password(admin: aioredis.Redis, password: str) -> None:
    """The api user's password, nothing else (redis-py's acl_setuser resets the rest)."""
    await admin.execute_command("ACL", "SETUSER", "api", "resetpass", f">{password}")


async def test_the_api_is_unready_when_its_redis_password_stops_working(
    tls_stack: Stack,
) -> None:
    port = free_ports(1)[0]
    proc = start_component(tls_stack, "api", port)
    admin = aioredis.Redis.from_url(tls_stack.redis.url, socket_timeout=2)
    password = tls_stack.redis.password("api")
    try:
        # the password is rotated on the server and every session of the user is cut
        await _set_password(admin, "rotated-elsewhere")
        await admin.client_kill_filter(user="api")

        async def unready() -> bool:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return answer.status_code == 503 and answer.json()["redis"] is False

        await eventually(unready, timeout=15)
        await _set_password(admin, password)

        async def ready() -> bool:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return answer.status_code == 200

        await eventually(ready, timeout=15)
    finally:
        await _set_password(admin, password)
        await admin.aclose()
        proc.terminate()
        proc.wait(timeout=30)


def test_the_tls_folder_keeps_the_key_private(tls_stack: Stack) -> None:
    assert tls_stack.tls is not None
    key = Path(tls_stack.tls.server_key)
    assert key.stat().st_mode & 0o077 == 0


# -- the whole stack in TLS mode, through the README's commands


def test_tls_mode_end_to_end_with_a_failover_drill(run_dir: Path) -> None:
    """`LEADERBOARD_TLS=true leaderboard up`: completions, a broadcast and a failover drill
    pass; the URLs it prints are TLS ones; no port answers in plaintext."""
    import json

    from websockets.sync.client import connect

    from tests.support import cli, detached_stack, stack_env

    plain = stack_env(run_dir)
    # A stack made in plaintext mode and switched: its members' pg_hba.conf rules follow.
    assert cli("up", "--detach", env=plain).returncode == 0
    assert cli("down", env=plain).returncode == 0
    env = {**plain, "LEADERBOARD_TLS": "true"}
    with detached_stack(env):
        status = json.loads(cli("status", "--json", env=env).stdout)
        assert status["redis_url"].startswith("rediss://")
        assert "sslmode=verify-full" in status["database_url"]
        token = cli("token", "tls-user", env=env).stdout.strip()
        with connect(status["ws_url"], open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            done = httpx.post(
                f"{status['api_url']}/api/action/complete",
                json={"actionId": "verify-email"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert done.status_code == 200, done.text
            pushed = json.loads(ws.recv(timeout=10))
        assert pushed["type"] == "top10"
        assert [e["userId"] for e in pushed["top"]] == ["tls-user"]

        async def plaintext_refused() -> None:
            plain = aioredis.Redis(
                host="127.0.0.1", port=int(env["LEADERBOARD_REDIS_PORT"]), socket_timeout=2
            )
            with pytest.raises(rex.ConnectionError):
                await plain.ping()
            await plain.aclose()
            for member in status["members"]:
                with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                    await asyncpg.connect(
                        host="127.0.0.1", port=member["port"], user="leaderboard",
                        password="x", database="leaderboard", ssl=False, timeout=5,
                    )  # fmt: skip

        asyncio.run(plaintext_refused())
        drill = cli("drill", "failover", "--json", env=env, timeout=180)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        summary = json.loads(drill.stdout)["summary"]
        assert summary["lost_writes"] == 0 and summary["all_rejoined"]
