"""A real Prometheus for the tests: scrapes a running local stack with the labels the chart's
ServiceMonitors give (job = the Service's name, namespace, service, pod, endpoint,
container), 1 s scrape and evaluation intervals, and loads the chart's alert rules file
unchanged."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import REPO, cli, free_ports

RULES = REPO / "charts" / "leaderboard" / "files" / "alerts.yaml"
RELEASE, NAMESPACE = "leaderboard", "local"


def scrape_job(component: str, port: int, endpoint: str) -> dict[str, Any]:
    service = f"{RELEASE}-{component}"
    labels = {
        "namespace": NAMESPACE, "service": service, "pod": f"{service}-0",
        "endpoint": endpoint, "container": component,
    }  # fmt: skip
    return {
        "job_name": service,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}],
    }


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        done = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = done.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> dict[str, dict[str, Any]]:
        """Alert name -> the active alert (``state``: pending or firing, ``activeAt``)."""
        body = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return {a["labels"]["alertname"]: a for a in body["data"]["alerts"]}

    def state(self, alert: str) -> str | None:
        found = self.alerts().get(alert)
        return str(found["state"]) if found else None

    def scraped(self, jobs: int) -> bool:
        return len(self.query("up == 1")) >= jobs


def scrape_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The metrics ports of a stack started with ``env`` (tests.support.stack_env)."""
    return {
        "api": int(env["LEADERBOARD_API_PORT"]),
        "broadcaster": int(env["LEADERBOARD_WS_PORT"]),
        "operator": int(env["LEADERBOARD_OPERATOR_METRICS_PORT"]),
    }


@contextlib.contextmanager
def prometheus(ports: Mapping[str, int]) -> Iterator[Prometheus]:
    """Prometheus scraping the api, broadcaster and operator at these local ports."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: make install brings Debian's package"
    folder = Path(tempfile.mkdtemp(prefix="lb-prometheus-"))
    (port,) = free_ports(1)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            scrape_job("api", ports["api"], "http"),
            scrape_job("broadcaster", ports["broadcaster"], "http"),
            scrape_job("operator", ports["operator"], "metrics"),
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(folder / "log", "w")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, (folder / "log").read_text()
            assert time.monotonic() < deadline, "prometheus did not get ready"
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def tokens(env: dict[str, str], *users: str) -> list[str]:
    done = cli("token", *users, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def traffic(env: dict[str, str]) -> None:
    """What a few players and a viewer do: completions, reads, a burst past the rate limit, a
    forged token."""
    base = f"http://127.0.0.1:{env['LEADERBOARD_API_PORT']}"
    users = [f"mon-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    minted = tokens(env, *users)
    with httpx.Client(base_url=base, timeout=10) as client:
        for user, token in zip(users, minted, strict=True):
            auth = {"Authorization": f"Bearer {token}"}
            done = client.post("/api/action/complete", json={"actionId": "verify-email"},
                               headers=auth)  # fmt: skip
            assert done.status_code == 200, done.text
            client.get("/api/leaderboard")
            client.get(f"/api/leaderboard/users/{user}")
        burst = {"Authorization": f"Bearer {minted[0]}"}
        codes = {client.post("/api/action/complete", json={"actionId": "quiz-basics",
                                                           "data": {"correct": 1}},
                             headers=burst).status_code for _ in range(12)}  # fmt: skip
        assert 429 in codes
        forged = client.post("/api/action/complete", json={"actionId": "verify-email"},
                             headers={"Authorization": "Bearer not.a.token"})  # fmt: skip
        assert forged.status_code == 401
