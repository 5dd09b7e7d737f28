"""``make chart-up``: the chart's pods as containers, found through the Service names, doing
the platform's work end to end; a broken pod spec fails naming the pod."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from leaderboard_tools.containers import image
from leaderboard_tools.containers.chartpods import Release
from leaderboard_tools.containers.engine import Engine, aardvark_dir
from leaderboard_tools.containers.kubelet import Doc, PodSpecError
from leaderboard_tools.containers.release import ChartUpError
from leaderboard_tools.devstack.process import StackError, wait_for

# Every test is async, so pytest-asyncio keeps them in one group: a sync test among them
# would be ordered apart, and the module's chart-up would run twice.
# Slow: deselected by `make test-fast`; a stack, drill or build of its own takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NS = "shop"
NAME = "lbtest"  # not the default release: a developer's `make chart-up` is left alone
FULL = f"{NAME}-leaderboard"


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.detect()
    image.build(engine, image.DEFAULT_TAG)
    return engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def release(engine: Engine) -> AsyncIterator[tuple[Release, dict[str, Any], str]]:
    up = Release(engine, image.DEFAULT_TAG, name=NAME, namespace=NS)
    first = await up.up(timeout=240)
    again = Release(engine, image.DEFAULT_TAG, name=NAME, namespace=NS)
    try:
        second = await again.up(timeout=240)  # replaces the first
        yield again, second, first["jwt_secret"]
    finally:
        again.down()


def token(secret: str, user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 600}
    return jwt.encode(claims, secret, algorithm="HS256")


def containers(engine: Engine, label: str) -> list[str]:
    done = engine.run("ps", "--all", "--format", "{{.Names}}", "--filter", f"label={label}")
    return sorted(done.stdout.split())


async def test_every_pod_is_ready_and_the_helm_test_passes(
    release: tuple[Release, dict[str, Any], str],
) -> None:
    _, result, _ = release
    pods = result["pods"]
    assert set(pods) == {
        f"{FULL}-{name}" for name in ("api-0", "broadcaster-0", "operator-0", "pg-0", "pg-1",
                                      "pg-2", "redis-0")
    }  # fmt: skip
    for name, pod in pods.items():
        assert pod["ready"], name
        assert pod["liveness"].startswith(("passed", "no probe")), (name, pod["liveness"])
    assert result["helm_test"] == {f"{FULL}-test-api": "API ready; leaderboard has 0 entries"}
    line = json.dumps(result)
    assert json.loads(line)["api_url"].startswith("http://127.0.0.1:")


async def test_a_second_chart_up_replaced_the_first(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    up, result, first_secret = release
    assert result["jwt_secret"] != first_secret  # a new render, new generated secrets
    names = containers(engine, up.label)
    services = [n for n in names if n.endswith("-svc")]
    assert sorted(set(names) - set(services)) == sorted(result["pods"])  # nothing left over
    assert len(names) == len(set(names))


async def test_the_standby_streams_synchronously_through_the_rw_service(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    # A member is ready when PostgreSQL accepts connections (pg_isready); the second standby
    # may still be connecting then, so poll: both stream, in the quorum, within a deadline.
    want = [f"{FULL}-pg-1|streaming|quorum", f"{FULL}-pg-2|streaming|quorum"]  # ANY 1 (*)
    seen: list[str] = []

    async def both_stream() -> bool:
        done = await asyncio.to_thread(
            engine.run,
            "exec", f"{FULL}-pg-0", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-XAtc",
            "SELECT application_name, state, sync_state FROM pg_stat_replication",
        )  # fmt: skip
        seen[:] = sorted(done.stdout.split())
        return seen == want

    try:
        await wait_for(both_stream, timeout=60, what="both standbys streaming", interval=0.5)
    except StackError:
        assert seen == want  # says which standby is missing


async def test_the_pods_resolve_every_dns_form_of_a_service(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    names = [
        f"{FULL}-redis", f"{FULL}-redis.{NS}", f"{FULL}-pg-rw.{NS}.svc",
        f"{FULL}-api.{NS}.svc.cluster.local", f"{FULL}-pg-0.{FULL}-pg-hl.{NS}.svc",
    ]  # fmt: skip
    script = "import socket, sys\nfor n in sys.argv[1:]: print(socket.gethostbyname(n))"
    done = engine.run("exec", f"{FULL}-api-0", "python", "-c", script, *names)
    assert len(done.stdout.split()) == len(names)


async def test_a_completion_through_the_api_service_reaches_a_viewer_of_the_broadcaster(
    release: tuple[Release, dict[str, Any], str],
) -> None:
    _, result, _ = release
    secret = result["jwt_secret"]
    user = f"chart-{uuid.uuid4().hex[:8]}"
    async with connect(f"{result['ws_url']}?token={token(secret, 'viewer')}") as ws:
        snapshot = json.loads(await ws.recv(decode=True))
        assert snapshot["type"] == "snapshot"
        async with httpx.AsyncClient(base_url=result["api_url"], timeout=10) as client:
            done = await client.post(
                "/api/action/complete",
                json={"actionId": "quiz-basics", "data": {"correct": 9}},
                headers={"Authorization": f"Bearer {token(secret, user)}"},
            )
            assert done.status_code == 200, done.text
            assert done.json()["score"] == 100 and done.json()["rank"] >= 1
            board = (await client.get("/api/leaderboard")).json()["top"]
            assert user in [entry["userId"] for entry in board]
        change = json.loads(await asyncio.wait_for(ws.recv(decode=True), 10))
        assert change["type"] == "top10" and change["seq"] == snapshot["seq"] + 1
        assert user in [entry["userId"] for entry in change["top"]]


async def test_every_postgresql_connection_is_tls_and_plaintext_is_refused(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    """The default chart: replication and the API's pool over TLS; the -app URI says
    verify-full; a plaintext connection to the -rw Service finds no pg_hba rule."""
    up, _, _ = release
    assert up.objects.secrets[f"{FULL}-pg-app"]["uri"].endswith("?sslmode=verify-full")
    done = engine.run(
        "exec", f"{FULL}-pg-0", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-XAtc",
        "SELECT a.backend_type, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid()",
    )  # fmt: skip
    rows = {tuple(line.split("|")) for line in done.stdout.splitlines()}
    assert ("walsender", "t") in rows and ("client backend", "t") in rows
    assert all(ssl == "t" for _, ssl in rows), rows
    plain = engine.run(
        "exec", f"{FULL}-pg-1", "psql",
        f"host={FULL}-pg-rw port=5432 user=postgres dbname=postgres sslmode=disable",
        "-XAtc", "SELECT 1", check=False,
    )  # fmt: skip
    assert plain.returncode != 0
    assert "no encryption" in plain.stderr


async def test_redis_speaks_only_tls_and_each_component_has_its_own_user(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    up, _, _ = release
    passwords = up.objects.secrets[f"{FULL}-redis"]
    redis = f"{FULL}-redis-0"
    plain = engine.run("exec", redis, "redis-cli", "-h", "127.0.0.1", "ping", check=False)
    assert "PONG" not in plain.stdout
    tls = ["redis-cli", "-h", "127.0.0.1", "--tls", "--cacert", "/tls/ca.crt", "--no-auth-warning"]

    def as_user(user: str, *command: str) -> str:
        auth = ["--user", user, "--pass", passwords[f"{user}-password"]]
        return engine.run("exec", redis, *tls, *auth, *command).stdout.strip()

    assert as_user("broadcaster", "HGET", "leaderboard:top10", "seq").isdigit()
    assert as_user("broadcaster", "ZADD", "leaderboard:scores", "1", "mallory").startswith("NOPERM")
    assert as_user("broadcaster", "PUBLISH", "leaderboard:updates", "x").startswith("NOPERM")
    assert as_user("api", "FLUSHALL").startswith("NOPERM")
    assert as_user("api", "CONFIG", "GET", "*").startswith("NOPERM")
    anonymous = engine.run("exec", redis, *tls, "--user", "default", "--pass", "x", "ping")
    assert "WRONGPASS" in anonymous.stdout + anonymous.stderr


async def test_the_operator_pod_says_it_waits_for_the_kubernetes_api(
    engine: Engine, release: tuple[Release, dict[str, Any], str]
) -> None:
    done = engine.run("logs", f"{FULL}-operator-0")
    logs = done.stdout + done.stderr
    assert "waiting for the Kubernetes API: no Kubernetes API configured" in logs
    assert "Traceback" not in logs


def _container(docs: list[Doc], kind: str, suffix: str) -> Doc:
    doc = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))
    container: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return container


async def test_a_mount_of_no_volume_fails_before_anything_starts(engine: Engine) -> None:
    def broken(docs: list[Doc]) -> None:
        _container(docs, "Deployment", "-broadcaster")["volumeMounts"].append(
            {"name": "cache", "mountPath": "/cache"}
        )

    up = Release(engine, image.DEFAULT_TAG, name="lbbroken", namespace=NS, mutate=broken)
    try:
        with pytest.raises(PodSpecError, match=r"pod lbbroken-leaderboard-broadcaster-0: .*cache"):
            await up.up(timeout=60)
        assert containers(engine, up.label) == []
    finally:
        up.down()


async def test_a_misspelt_env_name_fails_naming_the_pod_and_its_probe(engine: Engine) -> None:
    def broken(docs: list[Doc]) -> None:
        env = _container(docs, "Deployment", "-api")["env"]
        entry = next(e for e in env if e["name"] == "LEADERBOARD_DATABASE_URL")
        entry["name"] = "LEADERBOARD_DATABSE_URL"

    up = Release(engine, image.DEFAULT_TAG, name="lbbroken", namespace=NS, mutate=broken)
    leave_stale_dns(engine, up.network)  # as a run killed mid-way leaves it: still resolves
    try:
        with pytest.raises(ChartUpError) as failed:
            await up.up(timeout=30)
    finally:
        up.down()
    message = str(failed.value)
    assert "pod lbbroken-leaderboard-api-0: startupProbe httpGet /healthz" in message, message
    assert "pod lbbroken-leaderboard-broadcaster-0" not in message  # only the broken one


def leave_stale_dns(engine: Engine, network: str) -> None:
    """What netavark leaves of NETWORK when a run is killed before its teardown: the name
    server's file for it, headed by a gateway the next network of that name will not have.
    (A CI run failed this way: every name in the new network went unanswered.)"""
    if engine.name != "podman":
        return
    directory = aardvark_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / network).write_text(
        f"10.89.250.1\n{'0' * 64} 10.89.250.7  {network}-gone-svc,{'0' * 12}\n"
    )


async def test_the_name_server_files_of_gone_networks_are_removed_and_live_ones_kept(
    engine: Engine,
    release: tuple[Release, dict[str, Any], str],
) -> None:
    if engine.name != "podman":
        pytest.skip("aardvark-dns is podman's name server")
    live, _, _ = release
    leave_stale_dns(engine, "lbgone-chart")
    removed = engine.forget_stale_dns()
    assert "lbgone-chart" in removed
    assert live.network not in removed
    assert (aardvark_dir() / live.network).exists()
    assert not (aardvark_dir() / "lbgone-chart").exists()
