"""The chart's dashboards and alerts on a real Prometheus scraping a running local stack:
under real traffic and a kill -9 failover every panel's query returns data, the failover
alert fires in time, and the alerts that should stay quiet do."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import _traversable_tmpdir
from tests.monitoring.prometheus import Prometheus, prometheus, scrape_ports, tokens, traffic
from tests.support import REPO, cli, detached_stack, stack_env, wait_until

# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DASHBOARDS = REPO / "charts" / "leaderboard" / "files" / "dashboards"
# Grafana's $__rate_interval with a 1 s scrape interval: max(4 x scrape, interval + scrape).
RATE_INTERVAL = "4s"


@dataclass
class Run:
    prom: Prometheus
    promoted_at: float  # the operator's own record of the promotion (Unix time)
    failover_active_at: float  # when Prometheus first saw LeaderboardFailover (Unix time)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    root = _traversable_tmpdir("lb-monitoring-")
    env = stack_env(root / "run")
    ports = scrape_ports(env)
    try:
        with detached_stack(env), prometheus(ports) as prom:
            wait_until(
                lambda: prom.scraped(3), what="every target scraped", timeout=30, interval=0.2
            )
            ws_url = f"ws://127.0.0.1:{ports['broadcaster']}/ws"
            with connect(f"{ws_url}?token={tokens(env, 'viewer')[0]}") as viewer:
                assert json.loads(viewer.recv(timeout=5))["type"] == "snapshot"
                traffic(env)
                done = cli("drill", "failover", "--count", "1", "--json", env=env, timeout=180)
                assert done.returncode == 0, done.stdout + done.stderr
                wait_until(lambda: prom.state("LeaderboardFailover") == "firing",
                           what="LeaderboardFailover firing", timeout=60)  # fmt: skip
                active = prom.alerts()["LeaderboardFailover"]["activeAt"]
                promoted = prom.query("leaderboard_operator_last_failover_timestamp_seconds")
                traffic(env)  # the new primary serves; the panels see both sides
                wait_until(lambda: bool(prom.query("leaderboard_ws_connections > 0")),
                           what="the viewer scraped", timeout=10)  # fmt: skip
                yield Run(prom, float(promoted[0]["value"][1]), _unix(active))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _unix(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def panels() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query) of every target of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                found.append((dashboard["title"], panel["title"], expr))
    return found


def test_every_panel_of_every_dashboard_shows_data(run: Run) -> None:
    empty = [f"{d} / {p}: {q}" for d, p, q in panels() if not run.prom.query(q)]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_failover_alert_fires_within_two_evaluations_of_the_promotion(run: Run) -> None:
    # `for` is 0: it fires at the first evaluation that sees the counter's increase, one
    # scrape (1 s) and at most two evaluations (1 s each) after the promotion. It could not
    # fire at all while the counter was born at 1 on the first failover (no increase).
    late = run.failover_active_at - run.promoted_at
    assert -1 < late <= 3.0, late


def test_the_alerts_that_should_stay_quiet_do(run: Run) -> None:
    active = run.prom.alerts()
    for quiet in ("LeaderboardNoWritablePrimary", "LeaderboardRedisDown",
                  "LeaderboardSyncStandbyMissing", "LeaderboardApiLatencyP99"):  # fmt: skip
        assert run.prom.state(quiet) != "firing", (quiet, active)


def test_the_rules_are_the_charts_file_unchanged(run: Run) -> None:
    body = httpx.get(f"{run.prom.url}/api/v1/rules", timeout=10).json()
    files = {group["file"] for group in body["data"]["groups"]}
    assert files == {str(Path(REPO / "charts/leaderboard/files/alerts.yaml"))}
