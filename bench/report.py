"""The README's performance table from a ``make bench`` run's results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import cpu_budget

REPO = Path(__file__).resolve().parent.parent


def render(r: dict[str, Any]) -> str:
    s = r["setup"]
    api_cpu = r["api_complete"]["cpu_us"].get("api", 0)
    rows = [
        "| Path | Requests/s | p50 | p99 | Compared with | Ratio | Target |",
        "|---|---|---|---|---|---|---|",
        f"| POST /api/action/complete ({s['connections']} conn.) | "
        f"{r['api_complete']['rps']:,.0f} | {r['api_complete']['p50_ms']:.1f} ms | "
        f"{r['api_complete']['p99_ms']:.1f} ms | pgbench, the single-row award statement "
        f"(one completion per transaction, no boards), {s['pgbench_clients']} clients: "
        f"{r['pgbench_one_row']['rps']:,.0f} TPS | "
        f"**{r['ratios']['complete_vs_one_row']:.0%}** | ≥ 100%, p99 ≤ 50 ms |",
        f"| (same run) | | | | pgbench, the API's own statement (boards included), one "
        f"completion per transaction: {r['pgbench_award']['rps']:,.0f} TPS | "
        f"**{r['ratios']['complete_vs_pgbench']:.0%}** | |",
        f"| (same run) API CPU per completion | {api_cpu} µs | | | | | ≤ 150 µs |",
        f"| GET /api/leaderboard ({s['connections']} conn.) | {r['api_top10']['rps']:,.0f} | "
        f"{r['api_top10']['p50_ms']:.1f} ms | {r['api_top10']['p99_ms']:.1f} ms | bare endpoint, "
        f"same stack: {r['bare_endpoint']['rps']:,.0f} req/s | "
        f"**{r['ratios']['top10_vs_bare']:.0%}** | ≥ 200% |",
    ]
    if "tls" in r:
        t, ratios = r["tls"], r["ratios"]
        rows += [
            f"| POST /api/action/complete, **TLS mode** | {t['api_complete']['rps']:,.0f} | "
            f"{t['api_complete']['p50_ms']:.1f} ms | {t['api_complete']['p99_ms']:.1f} ms | "
            f"the plaintext run above | **{ratios['tls_complete_vs_plain']:.0%}** | |",
            f"| (same TLS run) | | | | pgbench over TLS, same SQL: "
            f"{t['pgbench_award']['rps']:,.0f} TPS | "
            f"**{ratios['tls_complete_vs_pgbench']:.0%}** | ≥ 50% |",
            f"| GET /api/leaderboard, **TLS mode** | {t['api_top10']['rps']:,.0f} | "
            f"{t['api_top10']['p50_ms']:.1f} ms | {t['api_top10']['p99_ms']:.1f} ms | "
            f"the plaintext run above | **{ratios['tls_top10_vs_plain']:.0%}** | |",
        ]
    if "archiving" in r:
        a = r["archiving"]
        rows += [
            f"| POST /api/action/complete, **WAL archiving on** (fresh stack) | "
            f"{a['on']['rps']:,.0f} | {a['on']['p50_ms']:.1f} ms | {a['on']['p99_ms']:.1f} ms | "
            f"the same on a fresh stack with archiving off: {a['off']['rps']:,.0f}/s"
            + (
                f" (server CPU per completion {a['cpu_us']['on']} µs on, "
                f"{a['cpu_us']['off']} µs off)"
                if "cpu_us" in a
                else ""
            )
            + f" | **{a['ratio']:.0%}** | ≥ 95% |",
        ]
    notes = (
        f"\nMeasured by `make bench` on {s['date']} ({s['machine']}, {s['api_workers']} API "
        f"server process(es) sharing the port with SO_REUSEPORT, CPU seconds each during the "
        f"write runs: {r['api_worker_cpu_s']}; best of {s['rounds']} runs of "
        f"{s['duration_s']} s; load generators, PostgreSQL primary and standby, Redis and the "
        f"API all on the same machine). Non-2xx answers during the completion run: "
        f"{r['api_complete']['non_2xx']} of {r['api_complete']['requests']}.\n\n"
        "CPU per completion by process, in µs (pgbench: per transaction): "
        + "; ".join(
            f"{label}: " + ", ".join(f"{k} {v}" for k, v in r[name]["cpu_us"].items())
            for label, name in (
                ("API", "api_complete"),
                ("pgbench", "pgbench_award"),
                ("pgbench single-row", "pgbench_one_row"),
            )
        )
        + "."
    )
    if "cpu_budget" in r:
        b, task = r["cpu_budget"], r["cpu_budget"][cpu_budget.TASK]
        steps = ", ".join(
            f"{name} {us - task:.0f}"
            for name, us in b.items()
            if name not in (cpu_budget.TASK, cpu_budget.FLOW)
        )
        notes += (
            f"\n\nThe API's CPU per completion, step by step (`bench/cpu_budget.py`: each step "
            f"alone, 32 in flight, in µs): {steps}; the whole flow without HTTP "
            f"{b[cpu_budget.FLOW]:.0f}; the HTTP server and the fast path per request (the "
            f"cached top-10 read) {r['api_top10']['cpu_us'].get('api', 0)}; under wrk "
            f"{r['api_complete']['cpu_us'].get('api', 0)}, "
            "the rest being what interleaving thousands of requests adds (loop turns, wake-ups)."
        )
    if "tls" in r:
        notes += (
            "\n\nTLS mode (`LEADERBOARD_TLS=true`: every Redis and PostgreSQL connection TLS, "
            "verified, and authenticated; a stack of its own after the plaintext one stopped), "
            "CPU per completion: "
            + "; ".join(
                f"{label}: " + ", ".join(f"{k} {v}" for k, v in r["tls"][name]["cpu_us"].items())
                for label, name in (("API", "api_complete"), ("pgbench", "pgbench_award"))
            )
            + "."
        )
    return "\n".join(rows) + "\n" + notes


def write_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(<!-- bench:end -->)", re.S)
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))
