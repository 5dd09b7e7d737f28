"""The stack's own services (API, broadcaster, ...), each a ``leaderboard <name>`` process.

They run exactly what their containers run, with the local stack's URLs in their environment.
A pid file per service lets ``down`` stop one left behind by a supervisor that was killed.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leaderboard_tools.devstack.process import read_pid, spawn, stop_pid


@dataclass
class Component:
    name: str
    host: str
    port: int
    run_dir: Path
    env: Mapping[str, str]
    ready_path: str = "/readyz"
    drain_s: float = 25.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        return read_pid(self.pid_path)

    def start(self) -> None:
        if self.pid() is not None:
            return
        self.process = spawn(
            [sys.executable, "-m", "leaderboard", self.name], log=self.log_path, env=self.env
        )
        self.pid_path.write_text(f"{self.process.pid}\n")

    def stop(self) -> None:
        """SIGTERM (drain in-flight work), SIGKILL past the drain time."""
        pid = self.pid()
        if pid is not None:
            child = self.process if self.process is not None and self.process.pid == pid else None
            stop_pid(pid, sig=signal.SIGTERM, timeout=self.drain_s, child=child)
        if self.process is not None:
            self.process.poll()  # reap ours if it died meanwhile
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    def exited_early(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-8:]
        return f"{self.name} exited with {self.process.returncode}: " + " | ".join(tail)

    async def ready(self) -> bool:
        """GET the readiness path; True on 200."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout=1.0
        )
        try:
            writer.write(
                f"GET {self.ready_path} HTTP/1.1\r\nHost: {self.host}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=2.0)
        finally:
            writer.close()
        return status_line.split(b" ", 2)[1:2] == [b"200"]
