"""Failover drills on a real local stack (PostgreSQL primary + synchronous standby, Redis, the
API and the operator), under write load through the API: A->B->A by kill -9, then a hang."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import cli, detached_stack, stack_env, wait_until

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def running_stack(run_dir: Path) -> Iterator[dict[str, str]]:
    env = stack_env(run_dir)
    with detached_stack(env):
        yield env


def _drill(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = cli("drill", "failover", "--json", *args, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_kill_9_twice_fails_over_and_back_without_losing_an_acknowledged_write(
    running_stack: dict[str, str],
) -> None:
    report = _drill(running_stack, "--count", "2")
    first, second = report["runs"]
    assert (first["old_primary"], first["new_primary"]) == ("member0", "member1")
    assert (second["old_primary"], second["new_primary"]) == ("member1", "member0")
    for run in report["runs"]:
        assert run["acknowledged"] > 0
        assert run["lost_writes"] == 0
        assert run["demoted_acks"] == 0
        assert run["write_downtime_s"] is not None  # writes came back (the figure: README)
        assert run["rejoined_s"] is not None
        assert run["detection_s"] <= run["promotion_s"] <= run["write_downtime_s"]

    status = json.loads(cli("status", "--json", env=running_stack).stdout)
    roles = {m["name"]: m["role"] for m in status["members"]}
    assert roles == {"member0": "primary", "member1": "replica"}
    events = (Path(running_stack["LEADERBOARD_RUN_DIR"]) / "operator.jsonl").read_text()
    actions = [json.loads(line)["action"] for line in events.splitlines()]
    assert actions.count("promoted") == 2 and actions.count("rejoined") == 2


def test_a_hung_primary_is_fenced_and_rejoins_after_it_wakes_up(
    running_stack: dict[str, str],
) -> None:
    report = _drill(running_stack, "--fault", "hang")
    (run,) = report["runs"]
    assert run["new_primary"] == "member1"
    assert run["lost_writes"] == 0 and run["demoted_acks"] == 0
    assert run["rejoined_s"] is not None
    events = (Path(running_stack["LEADERBOARD_RUN_DIR"]) / "operator.jsonl").read_text()
    actions = [json.loads(line)["action"] for line in events.splitlines()]
    # It was alive (only stopped): fenced before the promotion, not after.
    assert actions.index("fenced") < actions.index("promoted")


def test_a_planned_switchover_and_pause(running_stack: dict[str, str]) -> None:
    env = running_stack
    done = cli("switchover", "member1", env=env)
    assert done.returncode == 0, done.stderr
    status = json.loads(cli("status", "--json", env=env).stdout)
    assert status["primary"] == "member1"

    def rejoined() -> bool:
        members = json.loads(cli("status", "--json", env=env).stdout)["members"]
        return {m["name"]: m["role"] for m in members} == {
            "member0": "replica", "member1": "primary",
        }  # fmt: skip

    wait_until(rejoined, timeout=30)

    # Paused, the operator watches a dead primary and does nothing; resumed, it fails over.
    assert cli("pause", env=env).returncode == 0
    assert json.loads(cli("status", "--json", env=env).stdout)["operator"]["paused"] is True
    events = Path(env["LEADERBOARD_RUN_DIR"]) / "operator.jsonl"
    primary_pid = next(m["pid"] for m in status["members"] if m["name"] == "member1")
    os.kill(primary_pid, signal.SIGKILL)
    seen = len(events.read_text().splitlines())
    wait_until(lambda: "member1 missed 5 probes" in events.read_text(), timeout=10)
    assert "promote" not in "".join(events.read_text().splitlines()[seen:])  # past threshold
    assert cli("resume", env=env).returncode == 0
    wait_until(
        lambda: json.loads(cli("status", "--json", env=env).stdout)["primary"] == "member0",
        timeout=30,
    )


def test_losing_the_standby_holds_writes_until_it_is_back_and_loses_none(
    running_stack: dict[str, str],
) -> None:
    report = _drill(running_stack, "--fault", "standby")
    (run,) = report["runs"]
    assert run["new_primary"] == run["old_primary"] == "member0"  # no failover for a standby
    assert run["promotion_s"] is None
    assert run["lost_writes"] == 0 and run["acknowledged"] > 0
    assert run["rejoined_s"] is not None  # the operator restarted it as a replica


def test_the_kube_drill_builds_its_kubectl_commands_and_reads_their_answers(
    running_stack: dict[str, str],
) -> None:
    """``--kube`` against a kubectl stand-in backed by the local stack (no cluster here): the
    same drill, the same report; what differs is how it breaks and watches the cluster."""
    fakebin = Path(__file__).parent / "fakebin"
    env = {
        **running_stack,
        "PATH": f"{fakebin}:{os.environ['PATH']}",
        "LEADERBOARD_TEST_PYTHON": sys.executable,
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    api = json.loads(cli("status", "--json", env=running_stack).stdout)["api_url"]
    report = _drill(env, "--kube", "--namespace", "shop", "--cluster", "pg", "--api-url", api)
    (run,) = report["runs"]
    assert (run["old_primary"], run["new_primary"]) == ("member0", "member1")
    assert run["acknowledged"] > 0 and run["lost_writes"] == 0 and run["demoted_acks"] == 0
    # The fault lands when kubectl gets to it, after the drill took its time: no ordering
    # between promotion (timed from the command) and downtime (from the acknowledgements).
    assert run["detection_s"] <= run["promotion_s"]
    assert 0 < run["write_downtime_s"] < 30
    assert run["rejoined_s"] is not None
