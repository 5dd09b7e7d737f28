"""Write the Grafana dashboards of the chart (charts/leaderboard/files/dashboards/*.json).

One per component plus an overview, generated so that every panel has the same shape and every
query names metrics the services export (tests/chart checks both, and that the files are
current: run `make docs` after changing this).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "charts" / "leaderboard" / "files" / "dashboards"

Panel = tuple[str, list[tuple[str, str]], str]  # title, [(expr, legend)], unit

RATE = "[$__rate_interval]"

API: list[Panel] = [
    (
        "Requests/s by route and status",
        [
            (
                f"sum by (route, status) (rate(leaderboard_http_requests_total{RATE}))",
                "{{route}} {{status}}",
            )
        ],
        "reqps",
    ),
    (
        "Error ratio (5xx)",
        [
            (
                # `or vector(0)`: with no 5xx at all the numerator has no series, and the
                # panel would say "No data" when the truth is 0%.
                f'(sum(rate(leaderboard_http_requests_total{{status=~"5.."}}{RATE})) '
                f"or vector(0)) / sum(rate(leaderboard_http_requests_total{RATE}))",
                "5xx",
            )
        ],
        "percentunit",
    ),
    (
        "Latency percentiles by route",
        [
            (
                f"histogram_quantile({q}, sum by (le, route) "
                f"(rate(leaderboard_http_request_duration_seconds_bucket{RATE})))",
                f"p{int(q * 100)} {{{{route}}}}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        "s",
    ),
    (
        "Completions/s by action",
        [(f"sum by (action) (rate(leaderboard_completions_total{RATE}))", "{{action}}")],
        "ops",
    ),
    (
        "Rate-limit rejections/s",
        [(f"sum by (backend) (rate(leaderboard_rate_limited_total{RATE}))", "{{backend}}")],
        "ops",
    ),
    (
        "Top-10 changes/min",
        [(f"sum by (board) (rate(leaderboard_top10_changes_total{RATE})) * 60", "{{board}}")],
        "short",
    ),
    (
        "Dependencies: Redis fallbacks and PostgreSQL 503s",
        [
            (
                f"sum by (operation) (rate(leaderboard_redis_fallbacks_total{RATE}))",
                "redis {{operation}}",
            ),
            (f"sum(rate(leaderboard_db_unavailable_total{RATE}))", "postgres unavailable"),
        ],
        "ops",
    ),
    ("Pool connections", [("sum(leaderboard_db_pool_connections)", "open")], "short"),
    (
        "Completions per award transaction (group commit)",
        [
            (
                f"sum(rate(leaderboard_award_batch_size_sum{RATE})) / "
                f"sum(rate(leaderboard_award_batch_size_count{RATE}))",
                "mean",
            )
        ],
        "short",
    ),
    (
        "Award time: waiting for a transaction slot, then the transaction",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(leaderboard_award_{metric}_seconds_bucket{RATE})))",
                f"p{int(q * 100)} {label}",
            )
            for metric, label in (("queue", "waiting"), ("transaction", "transaction"))
            for q in (0.5, 0.99)
        ],
        "s",
    ),
    (
        "Completions with an unknown outcome, by what PostgreSQL showed",
        [
            (
                f"sum by (outcome) (rate(leaderboard_uncertain_completions_total{RATE}))",
                "{{outcome}}",
            )
        ],
        "ops",
    ),
    (
        "Ranking repairs: entries Redis lacked, and rebuilds",
        [
            (
                f"sum by (via) (rate(leaderboard_ranking_repaired_total{RATE}))",
                "repaired ({{via}})",
            ),
            (
                f"sum by (result) (rate(leaderboard_ranking_rebuilds_total{RATE}))",
                "rebuild {{result}}",
            ),
            ("sum(leaderboard_ranking_reconcile_behind)", "reconciliation behind"),
        ],
        "ops",
    ),
]

BROADCASTER: list[Panel] = [
    ("Connections per pod", [("sum by (pod) (leaderboard_ws_connections)", "{{pod}}")], "short"),
    (
        "Connection limit used",
        [("leaderboard_ws_connections / leaderboard_ws_max_connections", "{{pod}}")],
        "percentunit",
    ),
    (
        "Fan-out latency (receipt to last write)",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(leaderboard_ws_fanout_seconds_bucket{RATE})))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
        "s",
    ),
    (
        "Messages and bytes sent/s",
        [
            (f"sum(rate(leaderboard_ws_messages_sent_total{RATE}))", "messages"),
            (f"sum(rate(leaderboard_ws_bytes_sent_total{RATE}))", "bytes"),
        ],
        "short",
    ),
    (
        "Slow clients closed, dead peers, refusals",
        [
            (f"sum(rate(leaderboard_ws_slow_clients_closed_total{RATE}))", "slow closed"),
            (f"sum(rate(leaderboard_ws_dead_peers_total{RATE}))", "dead peers"),
            (f"sum by (reason) (rate(leaderboard_ws_rejected_total{RATE}))", "refused {{reason}}"),
        ],
        "ops",
    ),
    (
        "Redis subscription and re-syncs",
        [
            ("min(leaderboard_ws_redis_subscribed)", "subscribed (all pods)"),
            (f"sum(increase(leaderboard_ws_resyncs_total{RATE}))", "re-syncs"),
        ],
        "short",
    ),
]

POSTGRES: list[Panel] = [
    ("Primary (1 = current primary)", [("leaderboard_pg_primary", "{{member}}")], "short"),
    (
        "Writable primary",
        [("max by (cluster) (leaderboard_pg_writable_primary)", "{{cluster}}")],
        "short",
    ),
    ("Members up", [("leaderboard_pg_member_up", "{{member}}")], "short"),
    ("Replication lag", [("leaderboard_pg_replication_lag_bytes", "{{member}}")], "bytes"),
    ("Synchronous standbys", [("leaderboard_pg_sync_standbys", "{{cluster}}")], "short"),
    (
        "Failovers",
        [("sum by (cluster, kind) (leaderboard_operator_failovers_total)", "{{cluster}} {{kind}}")],
        "short",
    ),
    (
        "Last failover",
        [
            (
                "max by (cluster) (leaderboard_operator_last_failover_timestamp_seconds) * 1000",
                "{{cluster}}",
            )
        ],
        "dateTimeAsIso",
    ),
    (
        "Operator decisions/min by action",
        [
            (
                f"sum by (action) (rate(leaderboard_operator_decisions_total{RATE})) * 60",
                "{{action}}",
            )
        ],
        "short",
    ),
    (
        "Operator holding the lease",
        [("leaderboard_operator_leader", "{{cluster}} {{pod}}")],
        "short",
    ),
]

OVERVIEW: list[Panel] = [
    *API[:4],
    BROADCASTER[0],
    BROADCASTER[2],
    POSTGRES[0],
    POSTGRES[3],
    POSTGRES[5],
]


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    built = []
    for i, (name, queries, unit) in enumerate(panels):
        built.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": name,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["leaderboard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                }
            ]
        },
        "panels": built,
    }


DASHBOARDS = {
    "overview": ("leaderboard-overview", "Leaderboard / Overview", OVERVIEW),
    "api": ("leaderboard-api", "Leaderboard / API", API),
    "broadcaster": ("leaderboard-broadcaster", "Leaderboard / Broadcasters", BROADCASTER),
    "postgres": ("leaderboard-postgres", "Leaderboard / PostgreSQL and operator", POSTGRES),
}


def render() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(dashboard(*spec), indent=2) + "\n"
        for name, spec in DASHBOARDS.items()
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
