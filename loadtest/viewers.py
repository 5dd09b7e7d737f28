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
from typing import Any

from locust import between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LOADTEST_MAX_FAIL_RATIO", "0")
from loadtest.locustfile import Player, Viewer


class Changer(Player):
    """Few of them: each completes actions quickly, so the top 10 keeps changing."""

    weight = 1
    fixed_count = 4
    wait_time = between(0.5, 1.0)

    def on_start(self) -> None:
        super().on_start()
        self.user_id = f"changer-{uuid.uuid4().hex[:8]}"

    @task
    def change(self) -> None:
        self.complete()


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
