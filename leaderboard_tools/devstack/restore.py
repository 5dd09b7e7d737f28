"""``leaderboard restore``: every member of the local stack rebuilt from the repository, to the
latest archived point or to a time.

In order: close and archive the current WAL segment (so "latest" is now), check the target
against the recoverable window, pause the operator, stop the members and keep their data
aside under ``RUN_DIR/replaced/``, ``pgbackrest restore`` member0 (it replays to the target and
promotes onto a new timeline, which pgBackRest archives beside the old one: the source's
history is never overwritten), clone the other members from it, hand the operator its new
primary, and drop the Redis keys so that the API rebuilds every ranking from PostgreSQL, as
after a Redis loss."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis

from leaderboard.operator.pgbackrest import iso
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import StackError, wait_for
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.control import write_control

RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_action",
    "recovery_target_timeline",
)
REPLAYED = re.compile(r"last completed transaction was at log time (\S+ \S+)")


@dataclass(frozen=True)
class Restored:
    target: str  # "latest" or the target time
    recovered_to: str | None  # the last transaction replayed
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "recovered_to": self.recovered_to, "seconds": self.seconds}


def parse_target(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StackError(f"--target-time {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def restore(stack: Stack, target: dt.datetime | None) -> Restored:
    started = time.monotonic()
    backups = stack.backups
    if not backups.configured:
        raise StackError("no backup repository yet: start the stack with `leaderboard up`")
    stack.prepare_run_dir()  # binaries and every member's options (archiving)
    status = await stack.status()
    if status["primary"] is not None:
        primary = next(m for m in stack.members if m.name == status["primary"])
        await asyncio.to_thread(backups.flush, primary)
    window = backups.window(await asyncio.to_thread(backups.info))
    if window["recoverable_from"] is None:
        raise StackError("no backup to restore from: `leaderboard backup` takes one")
    if target is not None:
        start = dt.datetime.fromisoformat(window["recoverable_from"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(window["recoverable_until"].replace("Z", "+00:00"))
        if not start <= target <= end:
            raise StackError(
                f"target {iso(target)} is outside the recoverable window "
                f"({window['recoverable_from']} to {window['recoverable_until']})"
            )
    write_control(stack.run_dir, paused=True)
    try:
        first = stack.members[0]
        await asyncio.to_thread(_set_aside, stack)
        options = ["--type=default"]  # to the end of the archive, then promote
        if target is not None:
            at = target.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")  # pgBackRest's form
            options = ["--type=time", f"--target={at}", "--target-action=promote"]
        await asyncio.to_thread(backups.run_restore, first, options)
        log_start = first.log_path.stat().st_size if first.log_path.exists() else 0
        first.start()
        await wait_for(
            lambda: _is_primary(stack, first), timeout=300, what=f"{first.name} to finish recovery"
        )
        recovered_to = _replayed_until(first, log_start)
        await _forget_recovery(stack, first)
        for member in stack.members[1:]:
            await asyncio.to_thread(member.follow, first, stack.superuser_password)
            member.start()
        await stack.wait_streaming(first)
        stack.update_state(primary=first.name)
        write_control(stack.run_dir, adopt_primary=first.name)
    finally:
        write_control(stack.run_dir, paused=False)
    await _drop_cache(stack)
    return Restored(
        target=iso(target) if target is not None else "latest",
        recovered_to=recovered_to,
        seconds=round(time.monotonic() - started, 2),
    )


async def _forget_recovery(stack: Stack, member: Member) -> None:
    """pgBackRest wrote the recovery target and its own ``restore_command`` (naming this
    member's folder) into ``postgresql.auto.conf``; the standbys cloned next would inherit
    them and promote themselves at the same target."""
    conn = await member.connect(stack.superuser_password)
    try:
        for setting in RECOVERY_SETTINGS:
            await conn.execute(f"ALTER SYSTEM RESET {setting}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _set_aside(stack: Stack) -> None:
    """Stop every member and move its data to RUN_DIR/replaced/<time>/<member>."""
    aside = stack.run_dir / "replaced" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside.mkdir(parents=True)
    for member in sorted(stack.members, key=lambda m: m.configured_as_standby):
        member.stop()
    for member in stack.members:
        if member.data_dir.exists():
            shutil.move(member.data_dir, aside / member.name)


async def _is_primary(stack: Stack, member: Member) -> bool:
    if (why := member.exited_early()) is not None:
        raise StackError(f"{why}; see {member.log_path}")
    return await member.probe_role(stack.superuser_password) == "primary"


def _replayed_until(member: Member, offset: int) -> str | None:
    with open(member.log_path, errors="replace") as log:
        log.seek(offset)
        found = REPLAYED.findall(log.read())
    if not found:
        return None
    return iso(dt.datetime.fromisoformat(found[-1]))


async def _drop_cache(stack: Stack) -> None:
    """The rankings, published top 10s and reconciliation watermark describe the data that was
    replaced: without them the API rebuilds from PostgreSQL, as after a Redis loss."""
    client = aioredis.Redis.from_url(stack.redis.url, socket_timeout=5.0)
    try:
        prefix = stack.layout.redis_prefix
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for chunk in range(0, len(keys), 500):
            await client.delete(*keys[chunk : chunk + 500])
    finally:
        await client.aclose()
