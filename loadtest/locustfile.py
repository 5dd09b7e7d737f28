"""Locust scenarios for the leaderboard: players and viewers.

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 -u 50 -r 10 -t 60s

Works against the local stack with no set-up (tokens from the local dev key, WebSocket URL
from LEADERBOARD_WS_URL or the local broadcaster). Against a cluster, set
LEADERBOARD_JWT_SECRET (or mint tokens your issuer's way) and LEADERBOARD_WS_URL.

- Player: its own token; completes catalog actions with valid data (each once), reads the top
  10 and its own rank, and respects 429 + Retry-After.
- Viewer: holds a WebSocket; its connection is a request of type "WS" named "connect" (a
  refused one fails), every update one named "top10" whose time is commit-to-receipt (from the
  message's Redis timestamp), and a seq gap is a failure.

Pass/fail thresholds (LOADTEST_MAX_FAIL_RATIO, default 0.01; LOADTEST_MAX_P99_MS for the API)
set the exit code, so CI pipelines can gate on it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
import websocket
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.common import board, example, token, ws_url


class Player(HttpUser):
    weight = 4
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.user_id = f"lt-{uuid.uuid4().hex[:12]}"
        self.headers = {"Authorization": f"Bearer {token(self.user_id)}"}
        catalog = self.client.get("/api/actions", name="/api/actions").json()["actions"]
        self.todo = [(a["id"], example(a["data"])) for a in catalog]
        random.shuffle(self.todo)
        self.blocked_until = 0.0

    @task(4)
    def complete(self) -> None:
        complete_next(self)

    @task(3)
    def leaderboard(self) -> None:
        self.client.get("/api/leaderboard", name="/api/leaderboard")

    @task(1)
    def my_rank(self) -> None:
        with self.client.get(
            f"/api/leaderboard/users/{self.user_id}",
            name="/api/leaderboard/users/{userId}",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 404):  # 404 until its first completion
                response.success()

    @task(1)
    def this_week(self) -> None:
        """The weekly board and where the player stands on it (seasonal boards' reads)."""
        self.client.get("/api/leaderboards/weekly", name="/api/leaderboards/{board}")
        with self.client.get(
            f"/api/leaderboards/weekly/users/{self.user_id}",
            name="/api/leaderboards/{board}/users/{userId}",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 404):
                response.success()


def complete_next(user: Any) -> None:
    """Complete the next of ``user.todo`` (once each), as a client should: a 429 waits for its
    ``Retry-After``, ``already_completed`` (a retry that had landed) moves on."""
    if not user.todo or time.time() < user.blocked_until:
        return
    action_id, data = user.todo[-1]
    with user.client.post(
        "/api/action/complete",
        json={"actionId": action_id, "data": data},
        headers=user.headers,
        name="/api/action/complete",
        catch_response=True,
    ) as response:
        if response.status_code == 200:
            user.todo.pop()
            response.success()
        elif response.status_code == 429:  # expected under load: wait as told
            user.blocked_until = time.time() + int(response.headers.get("Retry-After", "1"))
            response.success()
        elif response.status_code == 400 and _code(response) == "already_completed":
            user.todo.pop()
            response.success()
        else:
            response.failure(f"{response.status_code} {_code(response)}")


class Viewer(User):
    weight = 1
    wait_time = between(1, 1)

    def on_start(self) -> None:
        url = ws_url(self.host)
        self.seq: int | None = None
        self.stopping = False
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                f"{url}?board={board()}&token={token(f'viewer-{uuid.uuid4().hex[:8]}')}",
                timeout=10,
            )
        except Exception as exc:  # refused, timed out, handshake rejected: it never watched
            _fire("WS", "connect", (time.perf_counter() - started) * 1000, 0, exc)
            raise StopUser from exc
        _fire("WS", "connect", (time.perf_counter() - started) * 1000, 0, None)
        self.ws.settimeout(None)  # a quiet top 10 is not a dead connection (pings keep it)
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except Exception as exc:  # closed by the server or the network
                if not (self.stopping or _run["stopping"]):
                    _fire("WS", "connection", 0, 0, exc)
                return
            received = time.time() * 1000
            message = json.loads(raw)
            if message.get("type") == "top10":
                gap = self.seq is not None and message["seq"] != self.seq + 1
                latency = max(0.0, received - message.get("ts", received))
                _fire("WS", "top10", latency, len(raw), AssertionError("seq gap") if gap else None)
            self.seq = message.get("seq", self.seq)

    @task
    def watch(self) -> None:
        pass  # the reader greenlet does the work; the task only keeps the user alive

    def on_stop(self) -> None:
        self.stopping = True
        self.reader.kill()
        self.ws.close()


_run = {"stopping": False}


@events.test_stopping.add_listener
def _stopping(**_: Any) -> None:
    # Sockets may close before each viewer's on_stop runs (in --processes mode they do):
    # from here on a closed socket is the end of the test, not a dropped viewer.
    _run["stopping"] = True


def _code(response: Any) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


def _fire(kind: str, name: str, ms: float, length: int, exc: BaseException | None) -> None:
    events.request.fire(
        request_type=kind, name=name, response_time=ms, response_length=length, exception=exc,
        context={},
    )  # fmt: skip


@events.quitting.add_listener
def _thresholds(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master judges the whole run
    stats = environment.stats.total
    max_fail = float(os.environ.get("LOADTEST_MAX_FAIL_RATIO", "0.01"))
    max_p99 = os.environ.get("LOADTEST_MAX_P99_MS")
    problems = []
    if stats.num_requests == 0:
        problems.append("no request was made")
    elif stats.fail_ratio > max_fail:
        problems.append(f"failure ratio {stats.fail_ratio:.2%} > {max_fail:.2%}")
    if max_p99 and stats.get_response_time_percentile(0.99) > float(max_p99):
        problems.append(f"p99 {stats.get_response_time_percentile(0.99)} ms > {max_p99} ms")
    if problems:
        print("loadtest FAILED: " + "; ".join(problems), file=sys.stderr)
        environment.process_exit_code = 1
    elif environment.process_exit_code is None:  # never clear another scenario's verdict
        environment.process_exit_code = 0
