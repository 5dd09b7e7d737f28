"""The process that owns a running local stack: ``leaderboard up`` in the foreground.

It takes an exclusive lock on the run folder (one stack per folder), starts the stack, writes
``stack.json`` once everything is ready, then waits for SIGINT/SIGTERM and stops everything in
order. It restarts nothing by itself: a member that dies stays down until the failover operator
(or a person) acts, exactly as in a real cluster. ``up --detach`` runs this same process in the
background and returns once it reports ready; ``down`` signals it and cleans up after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import StackError, pid_alive, spawn, stop_pid
from leaderboard_tools.devstack.rundir import MARKER, read_state
from leaderboard_tools.devstack.stack import Stack

log = logging.getLogger("leaderboard_tools.devstack")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stack.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            state = read_state(run_dir) or {}
            raise StackError(
                f"a stack is already running from {run_dir} "
                f"(supervisor pid {state.get('supervisor_pid', '?')}); `leaderboard down` stops it"
            ) from None
        yield


async def serve(
    stack: Stack,
    on_ready: Callable[[], Awaitable[None]],
    supervise: Callable[[Member], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the stack until SIGINT or SIGTERM, then stop it; always leaves nothing running.

    ``supervise(primary)`` (the failover operator) runs alongside once the stack is ready and
    is cancelled before the stack stops."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        with run_dir_lock(stack.run_dir):
            try:
                starting = asyncio.create_task(stack.start())
                stop_wait = asyncio.create_task(stopping.wait())
                await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not starting.done():  # interrupted while starting
                    starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await starting
                    return
                stop_wait.cancel()
                primary = starting.result()
                stack.write_state(supervisor_pid=os.getpid(), ready=True, primary=primary.name)
                operator = asyncio.create_task(supervise(primary)) if supervise else None
                await on_ready()
                try:
                    await _watch(stack, stopping, operator)
                finally:
                    if operator is not None:
                        operator.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await operator
            finally:
                await asyncio.to_thread(stack.stop)
                stack.state_path.unlink(missing_ok=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _watch(
    stack: Stack, stopping: asyncio.Event, operator: asyncio.Task[None] | None
) -> None:
    """Report (once) each process that dies; restarting is the operator's job, not ours."""
    reported: set[str] = set()
    while not stopping.is_set():
        if operator is not None and operator.done():  # nobody cancels it before we stop
            end = "cancelled" if operator.cancelled() else repr(operator.exception())
            log.error("the failover operator stopped (%s): no failover will happen", end)
            operator = None
        for member in stack.members:
            if member.name not in reported and (why := member.exited_early()) is not None:
                log.warning("%s; the operator decides what happens next", why)
                reported.add(member.name)
            elif member.pid() is not None:
                reported.discard(member.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=1.0)


def detach(stack: Stack, timeout: float = 120.0) -> int:
    """Start the supervisor in the background; return its pid once the stack is ready."""
    state = read_state(stack.run_dir)
    if state and state.get("ready") and pid_alive(int(state.get("supervisor_pid", 0))):
        return int(state["supervisor_pid"])
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    (stack.run_dir / MARKER).touch()
    log_path = stack.run_dir / "stack.log"
    child = spawn([sys.executable, "-m", "leaderboard", "up"], log=log_path, env=os.environ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(stack.run_dir)
        if state and state.get("ready") and state.get("supervisor_pid") == child.pid:
            return child.pid
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-10:]
            raise StackError("the stack failed to start:\n  " + "\n  ".join(tail))
        time.sleep(0.05)
    stop_pid(child.pid, timeout=30, child=child)
    raise StackError(f"the stack was not ready within {timeout:.0f} s; see {log_path}")


def down(stack: Stack, *, purge: bool = False) -> None:
    """Stop a running stack (foreground or detached) and anything it left behind."""
    state = read_state(stack.run_dir)
    pid = int(state.get("supervisor_pid") or 0) if state else 0
    if pid and pid_alive(pid):
        stop_pid(pid, timeout=60)
    # A supervisor killed with SIGKILL cannot clean up: stop what its pid files still name.
    stack.stop()
    stack.state_path.unlink(missing_ok=True)
    if purge:
        purge_run_dir(stack.run_dir)


def purge_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    if not (run_dir / MARKER).exists():
        raise StackError(f"refusing to delete {run_dir}: it is not a leaderboard run folder")
    shutil.rmtree(run_dir)
