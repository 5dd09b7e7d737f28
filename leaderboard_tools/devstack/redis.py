"""The local stack's Redis: one in-memory server, no persistence (PostgreSQL is the truth).

TLS mode: TLS only (no plaintext port), and only known users (``leaderboard.cache.acl``): the
administrator ``default`` and one user per component, with generated passwords."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError

from leaderboard import connection_urls, devsecrets
from leaderboard.cache import acl
from leaderboard.cache.keys import Keys
from leaderboard.certs import TlsFiles
from leaderboard_tools.devstack.process import StackError, read_pid, spawn, stop_pid


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError(
            "redis-server not found; install it with: "
            "apt-get install -y --no-install-recommends redis-server"
        )
    return path


@dataclass
class RedisServer:
    port: int
    base_dir: Path
    host: str = "127.0.0.1"
    tls: TlsFiles | None = None
    keys: Keys = field(default_factory=Keys)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The administrator's URL."""
        return self.url_for("default")

    def url_for(self, user: str) -> str:
        """The URL a component connects with (plaintext mode: everyone is ``default``)."""
        return connection_urls.local_redis_url(
            self.host, self.port, self.run_dir, user=user, tls=self.tls is not None
        )

    @property
    def run_dir(self) -> Path:
        return self.base_dir.parent

    def password(self, user: str) -> str:
        return devsecrets.read_or_create(devsecrets.redis_password_path(self.run_dir, user))

    def _tls_args(self) -> list[str | Path]:
        if self.tls is None:
            return ["--port", str(self.port)]
        aclfile = self.base_dir / "users.acl"
        passwords = {c: self.password(c) for c in acl.COMPONENTS}
        aclfile.write_text(acl.acl_file(self.password("default"), passwords, self.keys))
        aclfile.chmod(0o600)
        return [
            "--port", "0",  # nothing answers in plaintext
            "--tls-port", str(self.port),
            "--tls-cert-file", self.tls.server_cert,
            "--tls-key-file", self.tls.server_key,
            "--tls-ca-cert-file", self.tls.ca_cert,
            "--tls-auth-clients", "no",  # clients authenticate with passwords
            "--aclfile", aclfile,
        ]  # fmt: skip

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "redis.pid"

    def pid(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        return read_pid(self.pid_path)

    def start(self) -> None:
        if self.pid() is not None:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(
            [
                find_redis_server(),
                *self._tls_args(),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self.base_dir,
                "--pidfile",
                self.pid_path,
                "--loglevel",
                "warning",
            ],
            log=self.base_dir / "redis.log",
        )

    def stop(self, *, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            child = self.process if self.process is not None and self.process.pid == pid else None
            stop_pid(pid, sig=signal.SIGTERM, timeout=timeout, child=child)
        if self.process is not None:
            self.process.poll()  # reap ours if it died meanwhile
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    async def ping(self) -> bool:
        client = aioredis.Redis.from_url(self.url, socket_timeout=1.0)
        try:
            return bool(await client.ping())
        except AuthenticationError:
            raise  # will not heal by waiting
        except (ConnectionError, OSError):  # not listening yet
            return False
        finally:
            await client.aclose()
