"""Locust failover scenario: steady player load while the primary is killed.

    locust -f loadtest/failover.py --headless --host http://127.0.0.1:8000 -u 20 -r 10 -t 40s

After FAILOVER_AFTER_S (default 10) seconds it runs the operator's own drill
(`leaderboard drill failover --json`) in the background, which kills the primary and measures
write downtime and acknowledged writes lost. Against a cluster, set FAILOVER_KUBE_NAMESPACE
(and FAILOVER_KUBE_CLUSTER, the PostgresCluster, default `leaderboard-pg`):
the drill then runs with `--kube` through kubectl, its writers on the same --host.
It prints write downtime, the drill's other figures and the players' failed requests. The run
passes only if downtime < 30 s (the mission's line; the goal of 5 s is printed beside it) and
no acknowledged write was lost. It writes a timeline plot (requests/s and failures
per second with the fault marked) to reports/failover-timeline.png next to Locust's own
HTML/CSV reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Requests fail while there is no primary: that is what is measured, not a reason to fail.
os.environ.setdefault("LOADTEST_MAX_FAIL_RATIO", "0.5")
from loadtest.locustfile import Player  # noqa: F401  (the persona under load)

MISSION_S, GOAL_S = 30.0, 5.0
REPORTS = Path(os.environ.get("LOADTEST_REPORTS", "reports"))
_state: dict[str, Any] = {"samples": [], "drill": None, "greenlet": None}


@events.request.add_listener
def _sample(response_time: float, exception: BaseException | None, **_: Any) -> None:
    _state["samples"].append((time.time(), exception is None))


def _drill_command(host: str | None) -> list[str]:
    command = [sys.executable, "-m", "leaderboard", "drill", "failover", "--json"]
    namespace = os.environ.get("FAILOVER_KUBE_NAMESPACE")
    if namespace:
        cluster = os.environ.get("FAILOVER_KUBE_CLUSTER", "leaderboard-pg")
        command += ["--kube", "--namespace", namespace, "--cluster", cluster]
        command += ["--api-url", host or "http://127.0.0.1:8000"]
    return command


def _run_drill(host: str | None) -> None:
    gevent.sleep(float(os.environ.get("FAILOVER_AFTER_S", "10")))
    done = subprocess.run(_drill_command(host), capture_output=True, text=True, check=False)
    try:
        _state["drill"] = json.loads(done.stdout)
    except json.JSONDecodeError:
        _state["drill"] = {"error": done.stderr[-2000:]}


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    _state["greenlet"] = gevent.spawn(_run_drill, environment.host)


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    if _state["greenlet"] is not None:
        _state["greenlet"].join(timeout=120)  # a drill that outlasts the run still reports
    drill = _state["drill"]
    if not drill or "runs" not in drill:
        print(f"failover: the drill did not run or failed: {drill}", file=sys.stderr)
        environment.process_exit_code = 1
        return
    run = drill["runs"][0]
    downtime, lost = run["write_downtime_s"], run["lost_writes"]
    print(
        f"failover: write downtime {downtime} s (must be < {MISSION_S:.0f} s; goal {GOAL_S:.0f} s),"
        f" detection {run['detection_s']} s, promotion {run['promotion_s']} s, "
        f"acknowledged writes lost {'unknown (no primary answered)' if lost is None else lost}, "
        "acknowledged by a demoted primary "
        f"{run['demoted_acks']}, old primary rejoined after {run['rejoined_s']} s; "
        f"failed requests {environment.stats.total.num_failures} of "
        f"{environment.stats.total.num_requests}"
    )
    _plot(run["fault_at"])
    ok = downtime is not None and downtime < MISSION_S and lost == 0 and run["demoted_acks"] == 0
    if not ok:
        print("failover FAILED", file=sys.stderr)
        environment.process_exit_code = 1


def _plot(fault_at: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = _state["samples"]
    if not samples:
        return
    t0 = samples[0][0]
    seconds = int(samples[-1][0] - t0) + 1
    ok, bad = [0] * seconds, [0] * seconds
    for t, success in samples:
        (ok if success else bad)[int(t - t0)] += 1
    fig, ax = plt.subplots(figsize=(9, 3.5))
    # Second i counts what finished in [i, i+1): drawn as steps over that span, so the
    # failures after the kill are drawn after its mark.
    ax.step(range(seconds), ok, where="post", label="successful requests/s", color="#2a9d8f")
    ax.step(range(seconds), bad, where="post", label="failed requests/s", color="#e63946")
    ax.axvline(fault_at - t0, color="#555", linestyle="--", label="primary killed")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s")
    ax.set_title("Writes and reads through a failover")
    ax.legend(loc="upper right")
    fig.tight_layout()
    REPORTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(REPORTS / "failover-timeline.png", dpi=110)
