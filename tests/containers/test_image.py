"""The image as a user runs it: built by ``make image``'s code, each component started from it
with the chart's security settings (read-only root, writable /tmp only, user 10001, every
capability dropped, no new privileges) against a real PostgreSQL and Redis of the suite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from leaderboard import auth
from leaderboard.config import Settings
from leaderboard_tools.containers import image
from leaderboard_tools.containers.engine import Engine
from leaderboard_tools.devstack.stack import Stack
from tests.conftest import own_cluster
from tests.support import eventually, free_ports

# Every test is async, so pytest-asyncio keeps them in one group (a sync one would be
# ordered apart, and the module's fixtures set up twice).
# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TAG = image.DEFAULT_TAG  # the same tag as `make image`, so one build serves both
SECRET = secrets.token_urlsafe(32)
# What the chart's pods get: runAsUser/Group 10001, readOnlyRootFilesystem, an emptyDir at
# /tmp, capabilities drop ALL, allowPrivilegeEscalation false. Host networking reaches the
# suite's servers on 127.0.0.1.
HARDENED = (
    "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=64m",
    "--user", "10001:10001", "--cap-drop", "all", "--security-opt", "no-new-privileges",
)  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.detect()  # no engine is a failure here, not a skip: CI installs podman


@pytest.fixture(scope="module")
def built(engine: Engine) -> str:
    image.build(engine, TAG)
    return TAG


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster() -> AsyncIterator[Stack]:
    # Its own cluster: the image's API upserts the default catalog at start, which would
    # deactivate the extra actions other tests' APIs declared on the shared one.
    async with own_cluster("lb-image-") as stack:
        yield stack


class Containers:
    """Containers started by one test, always removed; their logs on demand."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.names: list[str] = []

    def start(self, *args: str, env: dict[str, str]) -> str:
        name = f"lb-image-test-{uuid.uuid4().hex[:8]}"
        flags = [f"--env={k}={v}" for k, v in env.items()]
        self.engine.run("run", "--detach", "--name", name, *HARDENED, *flags, TAG, *args)
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        done = self.engine.run("logs", name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        for name in self.names:
            self.engine.run("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture
def containers(engine: Engine, built: str) -> Iterator[Containers]:
    started = Containers(engine)
    try:
        yield started
    finally:
        for name in started.names:  # shown by pytest when the test failed
            print(f"--- logs of {name}:\n{started.logs(name)[-4000:]}")
        started.remove()


def services_env(stack: Stack, **ports: int) -> dict[str, str]:
    env = {
        "LEADERBOARD_DATABASE_URL": stack.services_database_url(),
        "LEADERBOARD_REDIS_URL": stack.redis.url,
        "LEADERBOARD_JWT_SECRET": SECRET,
        "LEADERBOARD_HOST": "127.0.0.1",  # host networking: stay on loopback
    }
    env.update({f"LEADERBOARD_{k.upper()}": str(v) for k, v in ports.items()})
    return env


def token(user: str, ttl: float = 600) -> str:
    return auth.mint(Settings(jwt_secret=SECRET), user, ttl=ttl)


async def until_answers(url: str, containers: Containers, name: str, timeout: float = 60) -> dict:
    """GET URL until it answers 200; fails early with the logs if the container died."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    body: dict = response.json()
                    return body
            except httpx.HTTPError:
                pass
            state = containers.engine.run("inspect", "--format", "{{.State.Status}}", name)
            assert state.stdout.strip() == "running", containers.logs(name)
            assert time.monotonic() < deadline, f"{url} never answered 200"
            await asyncio.sleep(0.2)


def _source_hashes() -> dict[str, str]:
    package = Path(image.REPO / "leaderboard")
    return {
        str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(package.rglob("*.py"))
    }


async def test_the_image_holds_exactly_the_source_that_was_copied_in(
    engine: Engine, built: str
) -> None:
    local = _source_hashes()
    script = (
        "import hashlib, json, pathlib, leaderboard\n"
        "root = pathlib.Path(leaderboard.__file__).parent\n"
        "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()"
        " for p in sorted(root.rglob('*.py'))}))\n"
    )
    done = engine.run("run", "--rm", *HARDENED, "--entrypoint", "python", built, "-c", script)
    assert json.loads(done.stdout) == local


async def test_the_image_holds_the_product_and_none_of_the_tooling(
    engine: Engine, built: str
) -> None:
    """leaderboard_tools (local stack, drills, chaos, containers) is not in the image: not
    importable, and the `leaderboard` command there has only the product's subcommands."""
    script = (
        "import importlib.util, json\n"
        "print(json.dumps([importlib.util.find_spec(m) is not None for m in"
        " ('leaderboard', 'leaderboard.operator.kube', 'leaderboard_tools')]))\n"
    )
    done = engine.run("run", "--rm", *HARDENED, "--entrypoint", "python", built, "-c", script)
    assert json.loads(done.stdout) == [True, True, False]
    usage = engine.run("run", "--rm", *HARDENED, built, "up", check=False)
    assert usage.returncode == 2, usage.stdout + usage.stderr
    assert "invalid choice: 'up'" in usage.stderr and "Traceback" not in usage.stderr
    for command in ("api", "broadcaster", "operator"):
        assert command in usage.stderr


async def test_the_image_runs_as_10001_and_that_user_can_write_only_tmp(
    engine: Engine, built: str
) -> None:
    assert engine.inspect(built, "{{.Config.User}}") == "10001:10001"
    # Without --read-only: the image's own files and folders, as its user sees them.
    find = "find / -xdev -path /tmp -prune -o -writable -print 2>/dev/null; id -u"
    done = engine.run("run", "--rm", "--network", "none", "--entrypoint", "sh", built, "-c", find,
                      check=False)  # fmt: skip
    lines = done.stdout.split()
    assert lines[-1] == "10001"
    assert lines[:-1] == [], f"writable by 10001 outside /tmp: {lines[:-1]}"


async def test_the_api_from_the_image_serves_completions_and_refuses_forged_tokens(
    cluster: Stack, containers: Containers
) -> None:
    (port,) = free_ports(1)
    name = containers.start("api", env=services_env(cluster, api_port=port))
    base = f"http://127.0.0.1:{port}"
    await until_answers(f"{base}/readyz", containers, name)
    user = f"img-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        body = {"actionId": "quiz-basics", "data": {"correct": 9}}
        done = await client.post("/api/action/complete", json=body,
                                 headers={"Authorization": f"Bearer {token(user)}"})  # fmt: skip
        assert done.status_code == 200, done.text
        assert done.json() == {
            "userId": user, "actionId": "quiz-basics", "pointsAwarded": 100, "score": 100,
            "rank": 1,
        }  # fmt: skip
        forged = auth.mint(Settings(jwt_secret="not-the-secret-" + SECRET), user)
        refused = await client.post("/api/action/complete", json=body,
                                    headers={"Authorization": f"Bearer {forged}"})  # fmt: skip
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_token"


async def test_the_broadcaster_from_the_image_pushes_the_change_a_completion_causes(
    cluster: Stack, containers: Containers
) -> None:
    api_port, ws_port = free_ports(2)
    env = services_env(cluster, api_port=api_port, ws_port=ws_port)
    api = containers.start("api", env=env)
    broadcaster = containers.start("broadcaster", env=env)
    await until_answers(f"http://127.0.0.1:{api_port}/readyz", containers, api)
    await until_answers(f"http://127.0.0.1:{ws_port}/readyz", containers, broadcaster)
    user = f"img-{uuid.uuid4().hex[:8]}"
    url = f"ws://127.0.0.1:{ws_port}/ws?token={token('viewer')}"
    async with connect(url, open_timeout=5) as ws:
        snapshot = json.loads(await ws.recv(decode=True))
        assert snapshot["type"] == "snapshot"
        async with httpx.AsyncClient(timeout=5) as client:
            done = await client.post(
                f"http://127.0.0.1:{api_port}/api/action/complete",
                json={"actionId": "verify-email"},
                headers={"Authorization": f"Bearer {token(user)}"},
            )
            assert done.status_code == 200, done.text
        change = json.loads(await asyncio.wait_for(ws.recv(decode=True), 10))
        assert change["type"] == "top10" and change["seq"] == snapshot["seq"] + 1
        assert user in [entry["userId"] for entry in change["top"]]


async def test_the_operator_from_the_image_says_it_waits_for_the_kubernetes_api(
    containers: Containers,
) -> None:
    metrics, health = free_ports(2)
    name = containers.start("operator", env={
        "LEADERBOARD_OPERATOR_METRICS_PORT": str(metrics),
        "LEADERBOARD_OPERATOR_HEALTH_PORT": str(health),
    })  # fmt: skip
    answer = await until_answers(f"http://127.0.0.1:{health}/healthz", containers, name)
    assert answer["kubernetes"] == "waiting" and "no Kubernetes API configured" in answer["reason"]

    async def logged_twice() -> str:
        logs = containers.logs(name)
        return logs if logs.count("waiting for the Kubernetes API") >= 2 else ""

    logs = await eventually(logged_twice, timeout=20)
    assert "Traceback" not in logs
    line = next(x for x in logs.splitlines() if "waiting for the Kubernetes API" in x)
    assert "no Kubernetes API configured" in line and "retrying in" in line
