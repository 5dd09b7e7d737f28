"""`make dashboards-snapshot`: each Grafana dashboard of the chart drawn to a PNG, for people
without Grafana.

It starts a stack of its own and a real Prometheus scraping it (the test harness, labels as
the chart's ServiceMonitors give), runs players, a viewer and a kill -9 failover drill, then
draws every panel from Prometheus' query_range with its title, unit and legends, into
reports/dashboards/<dashboard>.png.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.monitoring.prometheus import Prometheus, prometheus, scrape_ports, tokens, traffic  # noqa: E402
from tests.support import cli, detached_stack, stack_env  # noqa: E402

DASHBOARDS = REPO / "charts" / "leaderboard" / "files" / "dashboards"
OUT = REPO / "reports" / "dashboards"
STEP_S = 1


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def series(prom: Prometheus, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    expr = expr.replace("$__rate_interval", "4s")
    params = {"query": expr, "start": start, "end": end, "step": STEP_S}
    body = httpx.get(f"{prom.url}/api/v1/query_range", params=params, timeout=30).json()
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def draw(prom: Prometheus, path: Path, start: float, end: float, failover_at: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(path.read_text())
    panels = dashboard["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 2.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel.get("targets", []):
            for s in series(prom, target["expr"], start, end):
                xs = [float(t) - start for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), s["metric"]))
        ax.axvline(failover_at - start, color="red", linestyle=":", linewidth=1)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
        ax.set_xlabel("seconds (red: the kill -9)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(dashboard["title"])
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{path.stem}.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _load(env: dict[str, str], seconds: float) -> None:
    """Players for a while (fresh users each round, so the top 10 keeps changing)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        traffic(env)


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="lb-snapshot-"))
    root.chmod(0o755)
    env = stack_env(root / "run")
    ports = scrape_ports(env)
    from websockets.sync.client import connect

    with detached_stack(env), prometheus(ports) as prom:
        while len(prom.query("up == 1")) < len(ports):  # every target scraped once
            time.sleep(0.2)
        start = time.time()
        ws_url = f"ws://127.0.0.1:{ports['broadcaster']}/ws?token={tokens(env, 'viewer')[0]}"
        with connect(ws_url) as viewer:
            viewer.recv(timeout=5)
            _load(env, seconds=10)
            done = cli("drill", "failover", "--count", "1", "--json", env=env, timeout=180)
            drill = json.loads(done.stdout)["runs"][0]
            print(f"failover drill: write downtime {drill['write_downtime_s']} s, "
                  f"lost {drill['lost_writes']}")  # fmt: skip
            _load(env, seconds=10)
            end = time.time()
            time.sleep(3)  # the last samples scraped (1 s interval) and evaluated
            for path in sorted(DASHBOARDS.glob("*.json")):
                print(f"wrote {draw(prom, path, start, end, float(drill['fault_at']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
