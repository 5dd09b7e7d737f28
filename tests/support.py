"""Helpers shared by the tests: free ports, polling with a deadline, process and port checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from leaderboard.config import Settings
from leaderboard_tools.devstack.ports import free_ports

REPO = Path(__file__).resolve().parent.parent


def stack_env(run_dir: Path, members: int = 2) -> dict[str, str]:
    """Environment for a CLI stack in ``run_dir`` on free ports."""
    pg = free_ports(members)
    other = free_ports(4)
    return {
        "LEADERBOARD_RUN_DIR": str(run_dir),
        "LEADERBOARD_PG_PORT": str(pg[0]),
        "LEADERBOARD_PG_MEMBERS": str(members),
        "LEADERBOARD_REDIS_PORT": str(other[0]),
        "LEADERBOARD_API_PORT": str(other[1]),
        "LEADERBOARD_WS_PORT": str(other[2]),
        "LEADERBOARD_OPERATOR_METRICS_PORT": str(other[3]),
    }


def test_settings(run_dir: Path, members: int = 2, **overrides: Any) -> Settings:
    env = stack_env(run_dir, members)
    fields: dict[str, Any] = {k.removeprefix("LEADERBOARD_").lower(): v for k, v in env.items()}
    return Settings(**{**fields, **overrides})


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``leaderboard ARGS`` as a user would, in a clean LEADERBOARD_* environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "leaderboard", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


@contextlib.contextmanager
def detached_stack(env: Mapping[str, str]) -> Iterator[None]:
    """``leaderboard up --detach`` ... ``down --purge``. At the end it prints the operator's
    last decisions: pytest shows them when the test failed (a failover that did not happen
    says why there, and the run dir is gone afterwards)."""
    done = cli("up", "--detach", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    try:
        yield
    finally:
        for name, last in (("operator.jsonl", 60), ("stack.log", 30)):
            path = Path(env["LEADERBOARD_RUN_DIR"]) / name
            if path.exists():
                print(
                    f"{name}, last {last} lines:", *path.read_text().splitlines()[-last:], sep="\n"
                )
        cli("down", "--purge", env=env)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with its last result or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last: {last!r}")
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], Any],
    *,
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """:func:`eventually` for code that is not async: poll ``check`` until it returns a
    truthy value, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s; last: {result!r}")
        time.sleep(interval)


def pid_exists(pid: int) -> bool:
    from leaderboard_tools.devstack.process import pid_alive

    return pid_alive(pid)


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine, read from /proc (no tools needed)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def component_env(stack: Any, component: str = "default", **extra: str) -> dict[str, str]:
    """Environment for a `leaderboard <component>` process on the test cluster (in TLS mode
    with that component's own Redis user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    env.update(
        LEADERBOARD_RUN_DIR=str(stack.run_dir),
        LEADERBOARD_DATABASE_URL=stack.services_database_url(),
        LEADERBOARD_REDIS_URL=stack.redis.url_for(component),
        **extra,
    )
    return env


def start_component(stack: Any, component: str, port: int, **popen: Any) -> subprocess.Popen[Any]:
    """Start `leaderboard api|broadcaster` on ``port`` and wait until /readyz says 200."""
    import httpx

    var = "LEADERBOARD_API_PORT" if component == "api" else "LEADERBOARD_WS_PORT"
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "leaderboard", component],
        env=component_env(stack, component, **{var: str(port)}),
        cwd=REPO,
        **popen,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{component} exited with {proc.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc
