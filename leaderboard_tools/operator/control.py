"""What a person asked the local operator for (``leaderboard pause|resume|switchover|rollout``,
a restore's new primary): a small JSON file in the run directory that the operator reads
each round, replaced atomically so a reader never sees half of it."""

from __future__ import annotations

import json
from pathlib import Path


def control_path(run_dir: Path) -> Path:
    return run_dir / "operator-control.json"


def read_control(run_dir: Path) -> dict[str, object]:
    try:
        control = json.loads(control_path(run_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return control if isinstance(control, dict) else {}


def write_control(run_dir: Path, **changes: object) -> dict[str, object]:
    control = read_control(run_dir)
    control.update(changes)
    path = control_path(run_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(control))
    tmp.replace(path)
    return control
