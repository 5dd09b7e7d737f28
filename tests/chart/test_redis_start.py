"""The chart's Redis start script (charts/leaderboard/files/redis-start.sh) against a real
redis-server with TLS: a renewed certificate, a new CA included, is served without a restart
and without dropping a connection."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboard.certs import Authority
from tests.support import eventually, free_ports

SCRIPT = Path(__file__).parents[2] / "charts" / "leaderboard" / "files" / "redis-start.sh"
PASSWORD = "admin-secret"


def write_certificates(folder: Path) -> bytes:
    """A new CA and a server certificate it signed, as the Secret's keys; the CA's PEM."""
    authority = Authority.create("redis-start test CA")
    cert, key = authority.issue("localhost", ["localhost", "127.0.0.1"])
    (folder / "tls.key").write_bytes(key)
    (folder / "tls.crt").write_bytes(cert)
    (folder / "ca.crt").write_bytes(authority.cert_pem)
    return authority.cert_pem


@pytest.fixture
def redis_tls(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    server = shutil.which("redis-server")
    assert server, "redis-server missing: make install"
    tls = tmp_path / "tls"
    tls.mkdir()
    write_certificates(tls)
    (port,) = free_ports(1)
    argv = [
        server, "--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no",
        "--tls-cert-file", str(tls / "tls.crt"), "--tls-key-file", str(tls / "tls.key"),
        "--tls-ca-cert-file", str(tls / "ca.crt"), "--requirepass", PASSWORD,
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        yield port, tls
    finally:
        process.terminate()
        process.wait(10)


def client(port: int, ca: Path) -> aioredis.Redis:
    return aioredis.Redis(
        host="127.0.0.1", port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(ca),
        ssl_check_hostname=True, socket_timeout=2,
    )  # fmt: skip


async def test_a_renewed_certificate_and_ca_are_served_without_a_restart(
    redis_tls: tuple[int, Path], tmp_path: Path
) -> None:
    port, tls = redis_tls
    old_ca = tmp_path / "old-ca.crt"
    shutil.copy(tls / "ca.crt", old_ca)
    before = client(port, old_ca)
    await eventually(before.ping, timeout=10, interval=0.1)
    started = int((await before.info("server"))["process_id"])
    watcher = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), "watch-tls",
        env={"PATH": "/usr/bin:/bin", "TLS_DIR": str(tls), "REDIS_PORT": str(port),
             "CHECK_EVERY_S": "0.2", "REDISCLI_AUTH": PASSWORD},
    )  # fmt: skip
    try:
        new_ca = tmp_path / "new-ca.crt"
        new_ca.write_bytes(write_certificates(tls))  # the kubelet rewrote the mounted files

        async def serves_the_new_one() -> bool:
            fresh = client(port, new_ca)
            try:
                return bool(await fresh.ping())
            except (RedisConnectionError, ssl.SSLError, OSError):
                return False
            finally:
                await fresh.aclose()

        await eventually(serves_the_new_one, timeout=15, interval=0.2)
        # The same process, and the connection opened before the renewal still works.
        assert int((await before.info("server"))["process_id"]) == started
        assert await before.ping()
    finally:
        watcher.terminate()
        await watcher.wait()
        await before.aclose()
