"""Locust 10,000-viewer scenario: many WebSocket viewers on one broadcaster while a few
players keep changing the top 10.

    locust -f loadtest/viewers.py --headless --host http://127.0.0.1:8000 \\
           --processes 4 -u 10004 -r 500 -t 90s ManyViewers Changer

It passes only if every viewer connected, none was dropped, and every viewer received every
change. Connection failures, drops and seq gaps are Locust failures of type WS as they happen.
A gap only shows when a later message arrives, so the end of the run is checked too: a few
seconds before the end of ``--run-time`` (so every worker's report still arrives), the seq of
a fresh connection's snapshot (the broadcaster's latest) is sent to every process, and each
viewer reports "final seq", a failure if it does not hold that seq. The changers stop
LOADTEST_SETTLE_S (default 5) before that check, so nothing is in flight. Every viewer spawned
must have reported "connect" and "final seq" successfully, and no request of any kind may
fail. Raise `ulimit -n` first (each viewer is a socket).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, ClassVar

import gevent
import websocket
from locust import HttpUser, between, events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LOADTEST_MAX_FAIL_RATIO", "0")
# This week's board: it starts empty every Monday, so newcomers can enter its top 10 even on a
# stack whose all-time top 10 all hold the catalog's maximum.
os.environ.setdefault("LOADTEST_BOARD", "weekly")
from loadtest.common import board, example, token, ws_url
from loadtest.locustfile import Viewer, _fire, complete_next

# This process's state: changes wait until its viewers are connected and stop for the settle.
_phase = {"spawned": False, "settled": False}
_viewers: weakref.WeakSet[ManyViewers] = weakref.WeakSet()


@events.spawning_complete.add_listener
def _all_spawned(**_: Any) -> None:
    _phase["spawned"] = True


class Changer(HttpUser):
    """Few of them. Each climbs with a fresh user through the catalog (lowest points first),
    then starts again with another user, so the top 10 keeps changing while the board fills
    (a user's score is capped by the catalog, so on a full board changes slow down)."""

    fixed_count = 4
    wait_time = between(0.3, 0.6)

    def on_start(self) -> None:
        self.catalog = self.client.get("/api/actions", name="/api/actions").json()["actions"]
        self.blocked_until = 0.0
        self._new_user()

    def _new_user(self) -> None:
        self.user_id = f"changer-{uuid.uuid4().hex[:10]}"
        self.headers = {"Authorization": f"Bearer {token(self.user_id)}"}
        ordered = sorted(self.catalog, key=lambda a: a["points"], reverse=True)
        self.todo = [(a["id"], example(a["data"])) for a in ordered]  # pop() = lowest first

    def change(self) -> None:
        if not _phase["spawned"] or _phase["settled"]:
            return
        if not self.todo:
            self._new_user()
        complete_next(self)

    tasks: ClassVar[list[Any]] = [change]


class ManyViewers(Viewer):
    weight = 100

    def on_start(self) -> None:
        super().on_start()
        _viewers.add(self)


def latest_seq(host: str | None) -> int:
    """The broadcaster's current seq: the snapshot a new connection gets first."""
    ws = websocket.create_connection(
        f"{ws_url(host)}?board={board()}&token={token('final-check')}", timeout=10
    )
    try:
        message = json.loads(ws.recv())
    finally:
        ws.close()
    assert message["type"] == "snapshot", message
    return int(message["seq"])


def _on_settle(environment: Environment, msg: Message, **_: Any) -> None:
    _phase["settled"] = True


def _on_final_seq(environment: Environment, msg: Message, **_: Any) -> None:
    final = int(msg.data["seq"])
    for viewer in list(_viewers):  # (a seq past the final one would be a broadcaster bug too)
        ok = viewer.seq == final
        error = None if ok else AssertionError(f"has seq {viewer.seq}, the last is {final}")
        _fire("WS", "final seq", 0, 0, error)


def _schedule_checks(environment: Environment) -> None:
    """On the master (or the only process): settle, then send the latest seq to everyone."""
    assert environment.runner is not None and environment.parsed_options is not None
    run_time = environment.parsed_options.run_time
    if not run_time:
        print("viewers: no --run-time, so the final seq is not checked", file=sys.stderr)
        return
    runner = environment.runner
    # The check's results must be in the stats before the run ends: workers report every
    # WORKER_REPORT_INTERVAL (their last report, after stopping thousands of users, may come
    # too late to count) and the CSV files are rewritten every CSV_STATS_INTERVAL_SEC.
    margin = CSV_STATS_INTERVAL_SEC + 1.0
    if isinstance(runner, MasterRunner):
        margin += WORKER_REPORT_INTERVAL
    settle = min(float(os.environ.get("LOADTEST_SETTLE_S", "5")), (run_time - margin) / 3)
    started = time.monotonic()

    def sleep_until(at: float) -> None:
        gevent.sleep(max(0.0, started + at - time.monotonic()))

    def check() -> None:
        sleep_until(run_time - margin - settle)
        runner.send_message("settle")
        sleep_until(run_time - margin)
        try:
            seq = latest_seq(environment.host)
        except Exception as exc:
            _fire("WS", "final seq", 0, 0, exc)
            return
        runner.send_message("final_seq", {"seq": seq})

    gevent.spawn(check)


@events.init.add_listener
def _register(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner):  # workers and the single-process runner
        runner.register_message("settle", _on_settle)
        runner.register_message("final_seq", _on_final_seq)


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _schedule_checks(environment)


@events.quitting.add_listener
def _every_viewer(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    assert environment.runner is not None
    spawned = environment.runner.final_user_classes_count.get(ManyViewers.__name__, 0)
    stats = environment.stats
    connected = stats.get("connect", "WS")
    final = stats.get("final seq", "WS")
    problems = []
    if connected.num_requests - connected.num_failures != spawned:
        problems.append(f"{connected.num_requests - connected.num_failures} of {spawned} connected")
    if final.num_requests - final.num_failures != spawned:
        problems.append(
            f"{final.num_requests - final.num_failures} of {spawned} received the last change"
        )
    if not stats.get("top10", "WS").num_requests:
        problems.append(
            f"no top-10 change happened on {board()!r}, so nothing was proved (are its top 10 "
            "all at the catalog's maximum? the weekly board starts empty on Monday; "
            "LOADTEST_BOARD picks another, `leaderboard down --purge` empties them all)"
        )
    ws = [e for e in stats.errors.values() if e.method == "WS"]
    if ws:
        problems.append(f"{sum(e.occurrences for e in ws)} WS failures (drops, gaps, misses)")
    if problems:
        print("viewers FAILED: " + "; ".join(problems), file=sys.stderr)
        environment.process_exit_code = 1
    else:
        print(f"viewers: all {spawned} connected and received every change", file=sys.stderr)
