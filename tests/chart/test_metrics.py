"""Every metric a dashboard or an alert reads is one the services really export: scraped from
the /metrics of a running API, broadcaster and operator metrics server."""

from __future__ import annotations

import re

import httpx
import prometheus_client

from leaderboard.operator import metrics as operator_metrics
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api
from tests.broadcaster.conftest import running_broadcaster
from tests.chart.test_chart import used_metric_names
from tests.support import free_ports


def exported(text: str) -> set[str]:
    """Metric names from the exposition format's TYPE lines (present even with no sample)."""
    return set(re.findall(r"^# TYPE (\S+) \w+$", text, re.M))


async def test_dashboards_and_alerts_only_use_exported_metrics(api: Api, stack: Stack) -> None:
    seen: set[str] = set()
    seen |= exported((await api.client.get("/metrics")).text)
    async with running_broadcaster(stack) as ws, httpx.AsyncClient() as client:
        seen |= exported((await client.get(f"{ws.http}/metrics")).text)
    assert operator_metrics.DECISIONS  # imported: its families are registered
    port = free_ports(1)[0]
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
    try:
        async with httpx.AsyncClient() as client:
            seen |= exported((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    used = used_metric_names()
    assert used, "no metric found in the dashboards and alerts"
    assert used <= seen, sorted(used - seen)
