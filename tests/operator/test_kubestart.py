"""``leaderboard operator``'s start: it waits for the Kubernetes API with one clear line per
try and connects once the API answers (kmock stands in for the API server)."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path

import pytest
from kmock import Server

from leaderboard.operator.kube import start as kubestart
from tests.operator.kubemock import Emulator
from tests.support import eventually, free_ports

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: shop}}}}]
current-context: c
"""


def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(server=server))
    monkeypatch.setenv("KUBECONFIG", str(path))


async def test_an_unreachable_api_is_one_warning_per_try_and_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    kubeconfig(tmp_path, monkeypatch, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(kubestart, "RETRY_FIRST_S", 0.05)
    state = kubestart.ApiState()
    caplog.set_level(logging.WARNING, logger="leaderboard.operator")
    task = asyncio.create_task(kubestart.connect("shop", state))
    try:
        await eventually(lambda: _async(len(caplog.records) >= 2), timeout=10)
    finally:
        task.cancel()
    assert not state.connected
    assert f"the Kubernetes API at http://127.0.0.1:{port} is unreachable" in state.reason
    for record in caplog.records:
        assert record.exc_info is None  # no trace
        assert record.getMessage().startswith("waiting for the Kubernetes API: ")
        assert "retrying in" in record.getMessage()


async def test_no_configuration_at_all_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setattr(kubestart, "RETRY_FIRST_S", 0.05)
    state = kubestart.ApiState()
    task = asyncio.create_task(kubestart.connect("shop", state))
    try:
        await eventually(lambda: _async("no Kubernetes API configured" in state.reason))
    finally:
        task.cancel()


async def test_it_connects_once_the_api_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Emulator() as k8s, Server(k8s) as server:
        with warnings.catch_warnings():  # kmock 0.8 reads it with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            k8s.resources.load_bundled()
        k8s.resources["leaderboard.dev/v1/postgresclusters"] = {
            "namespaced": True, "kind": "PostgresCluster", "singular": "postgrescluster",
            "verbs": ["get", "list", "watch"],
        }  # fmt: skip
        kubeconfig(tmp_path, monkeypatch, str(server.url).rstrip("/"))
        state = kubestart.ApiState()
        client = await asyncio.wait_for(kubestart.connect("shop", state), 10)
        assert state.connected
        await client.close()


async def _async(value: object) -> object:
    return value
