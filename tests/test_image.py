"""The container image recipe: hadolint-clean, small context, non-root, exec form."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.support import REPO


def test_the_dockerfile_is_hadolint_clean_at_warning_level() -> None:
    hadolint = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "Dockerfile"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_runtime_stage_runs_as_a_numeric_user_in_exec_form() -> None:
    text = (REPO / "Dockerfile").read_text()
    runtime = text.split("FROM ")[-1]
    assert re.search(r"^USER \d+:\d+$", runtime, re.M)
    assert '\nENTRYPOINT ["leaderboard"]' in runtime and '\nCMD ["api"]' in runtime
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and stages[0] == stages[1]  # the same Python in both stages


def test_the_build_context_is_only_what_the_image_needs() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"  # everything is excluded by default
    assert {"!pyproject.toml", "!README.md", "!leaderboard/"} <= set(ignore)
