"""``python -m leaderboard_tools.operator.localmain``: the local operator as a process of its own,
for the stack in ``LEADERBOARD_RUN_DIR`` (which must be running: its stack.json names the
primary). ``leaderboard up`` runs the operator inside its supervisor instead; the chaos
drills run this one on a host of its own, so that a partition can cut it off."""

from __future__ import annotations

import asyncio
import logging
import sys

from leaderboard.config import SettingsError, load_settings
from leaderboard_tools.devstack.rundir import read_state
from leaderboard_tools.devstack.stack import Stack
from leaderboard_tools.operator.local import run_local


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(verifies_tokens=False)
    except SettingsError as exc:
        print(f"leaderboard operator: {exc}", file=sys.stderr)
        return 2
    stack = Stack.from_settings(settings)
    state = read_state(stack.run_dir)
    if state is None or not state.get("primary"):
        print(f"leaderboard operator: no running stack in {stack.run_dir}", file=sys.stderr)
        return 1
    stack.prepare_run_dir()  # finds the PostgreSQL binaries (rejoin runs pg_rewind)
    asyncio.run(run_local(stack, str(state["primary"]), settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
