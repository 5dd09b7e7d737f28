"""``leaderboard rollout``: every member restarted, the primary last through a switchover,
under the drill's writers, none of whose completions fails (the API holds them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import cli, stack_env

pytestmark = pytest.mark.slow


def test_a_rollout_restarts_replicas_first_and_the_primary_last_failing_no_write(
    run_dir: Path,
) -> None:
    env = {**stack_env(run_dir, members=3)}
    assert cli("up", "--detach", env=env, timeout=180).returncode == 0
    try:
        done = cli("rollout", "--json", env=env, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        before = result["primary_before"]
        assert sorted(result["restarted"]) == ["member0", "member1", "member2"]
        assert result["restarted"][-1] == before  # the primary last
        assert result["primary_after"] not in (None, before)  # through a switchover
        assert result["acknowledged"] > 0
        assert result["failed_requests"] == 0 and result["lost"] == 0
        assert result["longest_pause_s"] < 2.0 and result["passed"]

        events = [
            json.loads(line) for line in (run_dir / "operator.jsonl").read_text().splitlines()
        ]
        actions = [e["action"] for e in events]
        assert "promote" not in actions  # no failover: a switchover, and only one
        rolled = actions[actions.index("rollout") :]
        assert rolled.index("switched-over") > max(
            i for i, a in enumerate(rolled) if a == "restarted"
        )
    finally:
        assert cli("down", "--purge", env=env).returncode == 0
