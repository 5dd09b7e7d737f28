"""What a chaos run prints and leaves in ``reports/``: the JSON report, a PNG timeline
(writes per second, failures, each fault as a shaded span) and a table for people."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

KIND_COLOURS = {
    "process": "#ffb300",
    "network": "#1e88e5",
    "redis": "#8e24aa",
    "api": "#f4511e",
    "broadcaster": "#00897b",
}


def save(report: dict[str, Any], folder: Path, name: str) -> list[Path]:
    """``folder/NAME-<time>.json`` and ``.png`` (no PNG without matplotlib, from the ``dev``
    or ``loadtest`` extra)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    written = [stem.with_suffix(".json")]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    try:
        _plot(report, stem.with_suffix(".png"))
        written.append(stem.with_suffix(".png"))
    except ImportError:
        pass
    return written


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(14, 4.5), dpi=110)
    if timeline:
        t = [p[0] for p in timeline]
        ax.bar(t, [p[1] for p in timeline], width=1.0, color="#2e7d32", label="acknowledged/s")
        ax.bar(t, [-p[2] for p in timeline], width=1.0, color="#c62828", label="failed/s")
    start = report["faults"][0]["injected"] if report["faults"] else 0.0
    top = max((p[1] for p in timeline), default=1)
    named = len(report["faults"]) <= 15  # past that, names would overlap: colours by kind
    shown: set[str] = set()
    for i, f in enumerate(report["faults"]):
        a = f["injected"] - start
        b = (f["healed"] or f["injected"]) - start
        label = None if f["kind"] in shown else f"{f['kind']} fault"
        shown.add(f["kind"])
        ax.axvspan(a, b, color=KIND_COLOURS.get(f["kind"], "#9e9e9e"), alpha=0.3, label=label)
        if named:
            ax.text(a, top * (1.02 + 0.08 * (i % 3)), f["fault"], fontsize=7)
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["violations"])
    ax.set_title(f"{report['name']} seed {report['seed']}, {report['duration_s']:.0f} s: {verdict}",
                 fontsize=10)  # fmt: skip
    ax.set_xlabel("seconds since the first fault")
    ax.set_ylabel("requests per second")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    ax.set_ylim(top=top * 1.35)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'#':>3} {'fault':28} {'victim':12} {'promoted':9} {'downtime':>9} {'recovered':>10} "
        f"{'acked':>6} {'failed':>6}"
    ]
    for i, f in enumerate(report["faults"], 1):
        lines.append(
            f"{i:>3} {f['fault']:28} {f['victim']:12} {f['promoted'] or '-':9} "
            f"{_s(f['downtime_s']) if f['writes_resumed'] else 'never':>9} "
            f"{_s(f['recovered_s']):>10} {f['acknowledged']:>6} {f['failed']:>6}"
        )
    c = report["check"]
    lines += [
        "",
        f"{'fault':28} {'count':>5} {'downtime median':>16} {'max':>8} {'recovery max':>13}",
    ]
    for name, row in sorted(report["by_fault"].items()):
        lines.append(
            f"{name:28} {row['count']:>5} {_s(row['downtime_median_s']):>16} "
            f"{_s(row['downtime_max_s']):>8} {_s(row['recovery_max_s']):>13}"
        )
    lines += [
        "",
        f"acknowledged {c['acknowledged']}, lost {c['lost']}, by a demoted or isolated member "
        f"{c['split_brain']}; direct writes {c['direct_acknowledged']}, lost {c['direct_lost']}, "
        f"after demotion {c['direct_split_brain']}; ranking equal: {c['ranking_equal']}; "
        f"viewers at the last seq: {c['viewers_at_last_seq']}",
        "moderation: "
        + (", ".join(f"{k} {v}" for k, v in sorted(report.get("moderation", {}).items())) or "-"),
        "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["violations"]),
    ]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
