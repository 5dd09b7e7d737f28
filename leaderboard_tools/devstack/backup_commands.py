"""``leaderboard backup`` and ``leaderboard backups``: base backups and the recoverable window
of the running local stack (contract in ../shared/DESIGN.md, depth in docs/backups.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from leaderboard.config import Settings
from leaderboard_tools.devstack.postgres import Member
from leaderboard_tools.devstack.process import StackError
from leaderboard_tools.devstack.stack import Stack


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser("backup", help="take a base backup of the local stack now")
    backup.add_argument("--json", action="store_true", help="print one JSON object")
    backups = sub.add_parser("backups", help="list the backups and the recoverable window")
    backups.add_argument("--json", action="store_true", help="print one JSON object")
    restore = sub.add_parser("restore", help="rebuild every member from the backups")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="to the last archived write")
    which.add_argument("--target-time", metavar="ISO8601", help="to this moment")
    restore.add_argument("--json", action="store_true", help="print one JSON object")


def _archiving(stack: Stack) -> None:
    if not stack.archiving:
        raise StackError("WAL archiving is off (LEADERBOARD_BACKUP_ARCHIVING=false)")


def _primary(stack: Stack) -> Member:
    _archiving(stack)
    if not stack.backups.configured:
        raise StackError("no backup repository yet: start the stack with `leaderboard up`")
    status = asyncio.run(stack.status())
    name = status["primary"]
    if name is None:
        raise StackError("no member accepts writes: start the stack with `leaderboard up`")
    return next(m for m in stack.members if m.name == name)


def backup(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack.from_settings(settings, services=True)
    made = stack.backups.backup(_primary(stack))
    found = next(b for b in stack.backups.info().backups if b.id == made)
    if args.json:
        print(json.dumps(found.to_json()))
    else:
        print(
            f"backup {found.id}: {found.bytes:,} bytes, finished {found.to_json()['finished_at']}"
        )
    return 0


def backups(settings: Settings, args: argparse.Namespace) -> int:
    """The window reaches the moment of the call when the stack runs: the current WAL segment
    is closed and archived first (``pgbackrest check``)."""
    stack = Stack.from_settings(settings, services=True)
    _archiving(stack)
    if not stack.backups.configured:
        raise StackError("no backup repository yet: start the stack with `leaderboard up`")
    status = asyncio.run(stack.status())
    if status["primary"] is not None:
        stack.backups.flush(next(m for m in stack.members if m.name == status["primary"]))
    window = stack.backups.window(stack.backups.info())
    if args.json:
        print(json.dumps(window))
    else:
        _print(window)
    return 0


def _print(window: dict[str, Any]) -> None:
    for b in window["backups"]:
        print(f"{b['id']}  {b['started_at']} -> {b['finished_at']}  {b['bytes']:,} bytes")
    if not window["backups"]:
        print("no backup yet: `leaderboard backup` takes one")
    print(f"recoverable from {window['recoverable_from']} until {window['recoverable_until']}")


def restore(settings: Settings, args: argparse.Namespace) -> int:
    from leaderboard_tools.devstack.restore import parse_target
    from leaderboard_tools.devstack.restore import restore as run_restore

    target = parse_target(args.target_time) if args.target_time else None
    stack = Stack.from_settings(settings, services=True)
    _archiving(stack)
    done = asyncio.run(run_restore(stack, target))
    if args.json:
        print(json.dumps(done.to_json()))
    else:
        print(
            f"restored to {done.target}: last transaction {done.recovered_to}, "
            f"writable again after {done.seconds:.1f} s"
        )
    return 0
