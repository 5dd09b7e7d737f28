"""Child processes of the local stack: start, find, signal and wait, with deadlines.

Children run in their own session, so a Ctrl-C in the terminal reaches the supervisor only and
the supervisor decides the shutdown order. PostgreSQL refuses to run as root, so when the stack
runs as root its processes run as the ``postgres`` system user (:class:`OsUser`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(Exception):
    """A local-stack operation failed; the message says what and where to look."""


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def current(cls) -> OsUser:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def for_postgres(cls) -> OsUser:
        """The user PostgreSQL runs as: ``postgres`` when we are root, else ourselves."""
        if os.getuid() != 0:
            return cls.current()
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise StackError(
                "running as root needs a 'postgres' system user to run PostgreSQL "
                "(apt-get install postgresql creates it)"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def is_current(self) -> bool:
        return self.uid == os.getuid()

    def own(self, *paths: Path) -> None:
        if not self.is_current:
            for path in paths:
                os.chown(path, self.uid, self.gid)

    @property
    def switch_to(self) -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra_groups) for subprocess: switch only if we are someone else."""
        if self.is_current:
            return None, None, None
        return self.uid, self.gid, []


def spawn(
    argv: Sequence[str | Path],
    *,
    log: Path,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running child in its own session with output appended to ``log``."""
    uid, gid, groups = user.switch_to if user else (None, None, None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=uid,
            group=gid,
            extra_groups=groups,
        )


def run(
    argv: Sequence[str | Path],
    *,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    what: str = "",
) -> str:
    """Run a short command to completion; raise :class:`StackError` with its output on failure."""
    uid, gid, groups = user.switch_to if user else (None, None, None)
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{what or argv[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise StackError(f"{what or argv[0]} failed (exit {done.returncode}): {output}")
    return done.stdout


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state letter follows the command name, which is wrapped in parentheses.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file, if the file exists and the process lives."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        pid = int(first)
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    return pid if pid_alive(pid) else None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid`` and its direct children (a postmaster and its backends: PostgreSQL puts
    each child in a session of its own, so a process-group signal would miss them)."""
    for target in [pid, *children(pid)]:
        signal_pid(target, sig)


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int, timeout: float, child: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``pid`` has exited (reaping it if it is our child); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return True
        if child is None and not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def stop_pid(
    pid: int,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 15.0,
    child: subprocess.Popen[bytes] | None = None,
) -> None:
    """Signal ``pid``, wait for it to exit, and SIGKILL it past the deadline."""
    signal_pid(pid, sig)
    if not wait_gone(pid, timeout, child):
        signal_pid(pid, signal.SIGKILL)
        wait_gone(pid, 5.0, child)


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll an async predicate until it returns True; raise :class:`StackError` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if await check():
                return
        except Exception as exc:  # the thing is not up yet; remember why for the message
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        await asyncio.sleep(interval)
