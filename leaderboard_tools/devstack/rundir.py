"""The local stack's run folder: the marker that says a folder is one (so ``down --purge``
never deletes anything else), its state file, and the permissions PostgreSQL needs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from leaderboard_tools.devstack.process import OsUser, StackError

MARKER = ".leaderboard-run-dir"


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "stack.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def check_traversable(path: Path, user: OsUser) -> None:
    """PostgreSQL runs as another user: every folder above its data must let it through."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == user.uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == user.gid and st.st_mode & stat.S_IXGRP:
            continue
        raise StackError(
            f"PostgreSQL runs as '{user.name}', which cannot enter {folder}; "
            f"run `chmod o+x {folder}` or set LEADERBOARD_RUN_DIR to a folder under /tmp"
        )
    os.chmod(path, 0o755)  # noqa: S103 - postgres (another user) must enter it
