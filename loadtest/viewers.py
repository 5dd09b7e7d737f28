"""Locust 10,000-viewer scenario: many WebSocket viewers on one broadcaster while a few
players keep changing the top 10.

    locust -f loadtest/viewers.py --headless --host http://127.0.0.1:8000 \\
           --processes 4 -u 10004 -r 500 -t 90s ManyViewers Changer

It passes only if every viewer connected, none was dropped, and every viewer received every
change (no seq gap): connection failures, drops and gaps are all Locust failures of type WS,
and any failure fails the run. Raise `ulimit -n` first (each viewer is a socket).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar

from locust import between, events
from locust.env import Environment
from locust.runners import WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LOADTEST_MAX_FAIL_RATIO", "0")
from loadtest.common import example, token
from loadtest.locustfile import Player, Viewer

_spawned = {"done": False}


@events.spawning_complete.add_listener
def _all_spawned(**_: Any) -> None:
    _spawned["done"] = True  # changes start once every viewer of this process is connected


class Changer(Player):
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
        if not _spawned["done"]:
            return
        if not self.todo:
            self._new_user()
        self.complete()

    tasks: ClassVar[list[Any]] = [change]  # only this: not the reads Player also does


class ManyViewers(Viewer):
    weight = 100


@events.quitting.add_listener
def _every_viewer(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    ws = [e for e in environment.stats.errors.values() if e.method == "WS"]
    if ws:
        print(
            f"viewers FAILED: {sum(e.occurrences for e in ws)} drops or seq gaps", file=sys.stderr
        )
        environment.process_exit_code = 1
