"""Alerts that drills provoke, on a real Prometheus: Redis hung (SIGSTOP) and, with the
operator paused, the synchronous standby stopped. Each alert fires within its ``for:`` plus
two evaluation intervals of its condition turning true, and resolves after the drill."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from leaderboard_tools.devstack.process import signal_pid, signal_tree
from tests.conftest import _traversable_tmpdir
from tests.monitoring.prometheus import Prometheus, prometheus, scrape_ports
from tests.support import cli, detached_stack, stack_env, wait_until

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EVAL_S = 1.0  # the harness's evaluation (and scrape) interval
FOR_S = {"LeaderboardRedisDown": 60.0, "LeaderboardSyncStandbyMissing": 60.0}


def _unix(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Readers(threading.Thread):
    """A viewer's page polling the top 10 (reads need no standby, and touch Redis)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.stop.wait(0.3):
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/api/leaderboard")


def test_redis_hung_and_a_stopped_standby_fire_their_alerts_and_resolve() -> None:
    root = _traversable_tmpdir("lb-alert-drills-")
    env = stack_env(root / "run")
    ports = scrape_ports(env)
    readers = Readers(f"http://127.0.0.1:{ports['api']}")
    try:
        with detached_stack(env), prometheus(ports) as prom:
            wait_until(
                lambda: prom.scraped(3), what="every target scraped", timeout=30, interval=0.2
            )
            status = json.loads(cli("status", "--json", env=env).stdout)
            redis_pid = status["redis_pid"]
            standby = next(m for m in status["members"] if m["role"] == "replica")
            readers.start()
            assert cli("pause", env=env).returncode == 0  # or it would restart the standby
            faulted = time.time()
            signal_pid(redis_pid, signal.SIGSTOP)
            signal_tree(standby["pid"], signal.SIGSTOP)
            try:
                fired = _fire(prom, faulted)
            finally:
                signal_pid(redis_pid, signal.SIGCONT)
                signal_tree(standby["pid"], signal.SIGCONT)
                cli("resume", env=env)
            healed = time.time()
            for alert in fired:  # the Redis rule looks back 2 minutes at fallbacks
                wait_until(
                    _resolved(prom, alert), what=f"{alert} resolved", timeout=180, interval=0.2
                )
            print(f"fired: {fired}; resolved {time.time() - healed:.0f} s after healing")
    finally:
        readers.stop.set()
        shutil.rmtree(root, ignore_errors=True)


def _resolved(prom: Prometheus, alert: str) -> Callable[[], bool]:
    return lambda: prom.state(alert) is None


def _fire(prom: Prometheus, faulted: float) -> dict[str, float]:
    """Wait for both alerts to fire; check when each became pending and when it fired."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 100
    while len(seen) < len(FOR_S):
        assert time.monotonic() < deadline, f"only {sorted(seen)} fired: {prom.alerts()}"
        active = prom.alerts()
        for alert, hold in FOR_S.items():
            found = active.get(alert)
            if alert not in seen and found and found["state"] == "firing":
                pending_at = _unix(found["activeAt"])
                late = time.time() - pending_at - hold
                # seen by this poll within two evaluations (+ the poll's own 0.2 s)
                assert late <= 2 * EVAL_S + 0.5, (alert, late)
                # the condition is seen soon after the fault: the first failed Redis read,
                # or the primary's walsender timing out (wal_sender_timeout 5 s)
                assert pending_at - faulted <= 10, (alert, pending_at - faulted)
                seen[alert] = round(pending_at - faulted, 1)
        time.sleep(0.2)
    return seen
