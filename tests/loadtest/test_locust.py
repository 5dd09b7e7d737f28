"""Smoke runs of the Locust scenarios (a few users, seconds) so they keep working."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as serve_ws

from leaderboard_tools.devstack.stack import Stack
from tests.conftest import _traversable_tmpdir, own_cluster
from tests.support import (
    REPO,
    component_env,
    detached_stack,
    free_ports,
    stack_env,
    start_component,
)

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LOCUST = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py")]


@contextmanager
def _serve(stack: Stack, component: str) -> Iterator[int]:
    port = free_ports(1)[0]
    proc = start_component(stack, component, port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest_asyncio.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    """This module's own cluster rather than the shared one: the scenarios must see the top 10
    change, and nobody can enter a top 10 that other tests filled with users at the catalog's
    maximum score."""
    async with own_cluster("lb-lt-") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[tuple[int, int]]:
    with (
        _serve(stack, "api") as api,
        _serve(stack, "broadcaster") as ws,
    ):
        yield api, ws


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path) as f:
        return {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}


def test_players_and_viewers_run_clean_against_the_stack(
    stack: Stack, platform: tuple[int, int], tmp_path: Path
) -> None:
    api, ws = platform
    done = subprocess.run(
        [*LOCUST, "--headless", "--host", f"http://127.0.0.1:{api}", "-u", "8", "-r", "8",
         "-t", "8s", "--csv", str(tmp_path / "smoke"), "--html", str(tmp_path / "smoke.html"),
         "--only-summary"],
        env=component_env(stack, LEADERBOARD_WS_URL=f"ws://127.0.0.1:{ws}/ws"), cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(tmp_path / "smoke_stats.csv")
    completions = rows[("POST", "/api/action/complete")]
    assert int(completions["Request Count"]) > 0 and completions["Failure Count"] == "0"
    assert int(rows[("GET", "/api/leaderboard")]["Request Count"]) > 0
    updates = rows.get(("WS", "top10"))  # the viewers saw the players enter the top 10
    assert updates is not None and int(updates["Request Count"]) > 0
    assert updates["Failure Count"] == "0"  # no seq gap
    assert (tmp_path / "smoke.html").stat().st_size > 0


def test_the_exit_code_fails_a_run_past_its_thresholds(stack: Stack, tmp_path: Path) -> None:
    dead = free_ports(1)[0]  # nothing listens here: every request fails
    done = subprocess.run(
        [*LOCUST, "--headless", "--host", f"http://127.0.0.1:{dead}", "-u", "2", "-r", "2",
         "-t", "3s", "--only-summary", "Player"],
        env=component_env(stack), cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "loadtest FAILED" in done.stderr


@pytest.mark.parametrize("through", ["stack", "kubectl"])
def test_the_failover_scenario_passes_and_draws_its_timeline(through: str, tmp_path: Path) -> None:
    """Locally the drill kills the member itself; against a cluster it goes through kubectl
    (here the kubectl stand-in of tests/operator, backed by the same local stack)."""
    root = _traversable_tmpdir("lb-lt-failover-")
    env = stack_env(root / "run")
    try:
        with detached_stack(env):
            _failover_scenario(through, env, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _failover_scenario(through: str, env: dict[str, str], tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    if through == "kubectl":
        base["PATH"] = f"{REPO / 'tests' / 'operator' / 'fakebin'}:{base['PATH']}"
        base.update(
            LEADERBOARD_TEST_PYTHON=sys.executable, PYTHONPATH=str(REPO),
            FAILOVER_KUBE_NAMESPACE="shop", FAILOVER_KUBE_CLUSTER="pg",
        )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "failover.py"),
         "--headless", "--host", f"http://127.0.0.1:{env['LEADERBOARD_API_PORT']}",
         "-u", "6", "-r", "6", "-t", "12s", "--only-summary"],
        env={**base, **env, "FAILOVER_AFTER_S": "3", "LOADTEST_REPORTS": str(tmp_path)},
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "acknowledged writes lost 0" in done.stdout
    assert re.search(r"failed requests \d+ of [1-9]\d*", done.stdout), done.stdout[-2000:]
    assert (tmp_path / "failover-timeline.png").stat().st_size > 10_000


def test_the_many_viewers_scenario_runs_clean(
    stack: Stack, platform: tuple[int, int], tmp_path: Path
) -> None:
    api, ws = platform
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "viewers.py"),
         "--headless", "--host", f"http://127.0.0.1:{api}", "-u", "24", "-r", "24", "-t", "6s",
         "--csv", str(tmp_path / "viewers"), "--only-summary", "ManyViewers", "Changer"],
        env=component_env(stack, LEADERBOARD_WS_URL=f"ws://127.0.0.1:{ws}/ws"), cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all 20 connected and received every change" in done.stderr
    rows = _rows(tmp_path / "viewers_stats.csv")
    assert int(rows[("POST", "/api/action/complete")]["Request Count"]) > 0  # changers changed
    assert int(rows[("WS", "top10")]["Request Count"]) > 0
    assert rows[("WS", "connect")]["Request Count"] == "20"
    assert rows[("WS", "final seq")]["Request Count"] == "20"
    assert all(r["Failure Count"] == "0" for r in rows.values())  # no drop, no gap, no miss


async def test_the_many_viewers_scenario_fails_when_a_viewer_misses_the_last_change(
    stack: Stack, tmp_path: Path
) -> None:
    """A broadcaster that sends its last change to half of its viewers only: no viewer sees a
    gap (nothing comes after it), so only the end-of-run check can tell."""
    viewers: list[ServerConnection] = []
    all_connected = asyncio.Event()
    state = {"seq": 1}

    async def serve(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "snapshot", "seq": state["seq"], "top": []}))
        viewers.append(ws)
        if len(viewers) == 10:
            all_connected.set()
        await ws.wait_closed()

    async def change_for_half() -> None:
        await all_connected.wait()
        state["seq"] = 2
        update = {"type": "top10", "seq": 2, "top": [], "ts": time.time() * 1000}
        for ws in viewers[::2]:
            await ws.send(json.dumps(update))

    async with serve_ws(serve, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        changer = asyncio.create_task(change_for_half())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "viewers.py"),
            "--headless", "--host", "http://127.0.0.1:9", "-u", "10", "-r", "10", "-t", "8s",
            "--only-summary", "ManyViewers",
            env={**component_env(stack), "LEADERBOARD_WS_URL": f"ws://127.0.0.1:{port}/ws",
                 "LOADTEST_SETTLE_S": "1"},
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        await changer
    stderr = err.decode()
    assert proc.returncode == 1, stderr[-2000:]
    assert "5 of 10 received the last change" in stderr, stderr[-2000:]
