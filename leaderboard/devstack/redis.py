"""The local stack's Redis: one in-memory server, no persistence (PostgreSQL is the truth)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from leaderboard.devstack.process import StackError, read_pid, spawn, stop_pid


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
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

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
                "--port",
                str(self.port),
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
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    async def ping(self) -> bool:
        client = aioredis.Redis(host=self.host, port=self.port, socket_timeout=1.0)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()
