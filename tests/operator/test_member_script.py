"""pg-member.sh, the role-aware start script shared by the local stack and the Kubernetes pods.

Its behaviour is exercised for real by the drills (rejoin after kill -9: pg_rewind) and the
Kubernetes shell test; here: shellcheck, and the rule that a member never makes itself primary.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from leaderboard_tools.devstack.postgres import MEMBER_SCRIPT


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: apt-get install shellcheck (scripts/system-deps.sh)"
    done = subprocess.run([shellcheck, str(MEMBER_SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_no_data_and_no_primary_waits_instead_of_creating_a_cluster(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PGBIN": "/nonexistent",
        "PGDATA": str(tmp_path / "data"),
        "MEMBER_NAME": "pg-1",
        "BOOTSTRAP_MEMBER": "pg-0",
        "PRIMARY_HOST": "127.0.0.1",
        "PRIMARY_PORT": "1",  # nothing listens: no primary answers
        "PGPASSWORD": "x",
    }
    done = subprocess.run(
        ["bash", str(MEMBER_SCRIPT), "prepare"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 75, done.stderr  # EX_TEMPFAIL: retry later
    assert "no primary to clone from yet" in done.stderr
    assert not (tmp_path / "data").exists()
