"""The broadcaster on real sockets, fed through the real API and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from leaderboard import auth
from leaderboard_tools.devstack.redis import RedisServer
from leaderboard_tools.devstack.stack import Stack
from tests.apiclient import Api
from tests.broadcaster.conftest import Running, running_broadcaster, viewer
from tests.support import eventually, free_ports, start_component


async def _caught_up(running: Running, api: Api) -> None:
    """Wait until the broadcaster has received everything published so far."""

    async def check() -> bool:
        published = await api.services.redis.hget("leaderboard:top10", "seq")
        return published is not None and running.broadcaster.hub.seq == int(published)

    await eventually(check, timeout=5)


async def _refused(url: str, origin: str | None = None) -> tuple[int, str]:
    """The HTTP status and error code of a WebSocket handshake the broadcaster refuses."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=origin):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body)["error"]["code"]


def _seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


async def test_a_viewer_gets_the_current_top10_as_a_snapshot_first(
    empty_board: Api, broadcaster: Running
) -> None:
    await empty_board.complete("snap-a", "first-lesson")
    await empty_board.complete("snap-b", "verify-email")
    await _caught_up(broadcaster, empty_board)
    async with viewer(broadcaster.url) as v:
        messages = await v.wait_for(lambda m: len(m) >= 1)
    first = messages[0]
    assert first["type"] == "snapshot"
    top = (await empty_board.client.get("/api/leaderboard")).json()["top"]
    assert first["top"] == top
    last = await empty_board.services.redis.hget("leaderboard:top10", "seq")
    assert first["seq"] == int(last)


async def test_one_message_per_membership_change_and_none_when_only_scores_move(
    empty_board: Api, broadcaster: Running
) -> None:
    api = empty_board
    for i in range(10):
        await api.complete(f"b-{i}", "verify-email")
    await _caught_up(broadcaster, api)  # else the snapshot may predate the last entries
    async with viewer(broadcaster.url) as v:
        await v.wait_for(lambda m: len(m) == 1)
        await api.complete("b-3", "final-exam", {"examId": "q", "score": 90})  # moves, same set
        await api.complete("b-new", "first-lesson")  # enters: b-9 leaves
        messages = await v.wait_for(lambda m: len(m) == 2)
        await api.complete("b-new", "verify-email")  # only its score moves
        sentinel = "b-later"
        await api.complete(sentinel, "final-exam", {"examId": "q", "score": 95})
        messages = await v.wait_for(lambda m: len(m) == 3)
    assert [m["type"] for m in messages] == ["snapshot", "top10", "top10"]
    assert _seqs(messages) == list(range(messages[0]["seq"], messages[0]["seq"] + 3))
    assert "b-new" in {e["userId"] for e in messages[1]["top"]}
    assert sentinel in {e["userId"] for e in messages[2]["top"]}


async def test_twenty_concurrent_changes_arrive_contiguous_and_end_on_the_api_top10(
    empty_board: Api, broadcaster: Running
) -> None:
    api = empty_board
    for i in range(10):
        await api.complete(f"base-{i}", "verify-email")
    await _caught_up(broadcaster, api)
    async with viewer(broadcaster.url) as v:
        await v.wait_for(lambda m: len(m) == 1)
        # Twenty newcomers at once, each worth more than the ten at 10 points: whatever the
        # interleaving, only newcomers change the top 10, so its last message is the truth.
        plans = [("first-lesson", None), ("final-exam", {"examId": "z", "score": 70}),
                 ("quiz-basics", {"correct": 8}), ("seven-day-streak", {"days": 9})]  # fmt: skip
        await asyncio.gather(
            *(api.complete(f"c-{i:02d}", *plans[i % len(plans)]) for i in range(20))
        )
        await _caught_up(broadcaster, api)
        published = broadcaster.broadcaster.hub.seq
        messages = await v.wait_for(lambda m: m[-1]["seq"] == published)
    seqs = _seqs(messages)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous, no duplicates
    assert len(messages) >= 11  # each base user was pushed out once
    assert messages[-1]["top"] == (await api.client.get("/api/leaderboard")).json()["top"]


async def test_two_broadcasters_both_deliver_every_change(
    empty_board: Api, stack: Stack, broadcaster: Running
) -> None:
    async with (
        running_broadcaster(stack) as other,
        viewer(broadcaster.url) as one,
        viewer(other.url) as two,
    ):
        await one.wait_for(lambda m: len(m) == 1)
        await two.wait_for(lambda m: len(m) == 1)
        for i in range(5):
            await empty_board.complete(f"d-{i}", "verify-email")
        await one.wait_for(lambda m: len(m) == 6)
        await two.wait_for(lambda m: len(m) == 6)
        assert one.messages == two.messages


async def test_a_client_that_never_reads_does_not_delay_others_and_is_closed(
    stack: Stack,
) -> None:
    async with running_broadcaster(stack, ws_slow_client_s=1.0) as running:
        hub = running.broadcaster.hub
        # A raw client with a tiny receive buffer that completes the handshake, then never reads.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", running.settings.ws_port))
        stuck.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with viewer(running.url) as good:
            await good.wait_for(lambda m: len(m) == 1)
            await eventually(lambda: _count(hub, 2), timeout=5)
            base = hub.seq
            big_top = [{"rank": i, "userId": "x" * 2000, "score": i} for i in range(1, 11)]
            for n in range(1, 101):  # 100 updates of ~20 KB: far more than the stuck one holds
                hub.publish(json.dumps({"type": "top10", "seq": base + n, "top": big_top}).encode())
                await asyncio.sleep(0)
            await good.wait_for(lambda m: m[-1]["seq"] == base + 100)
            assert _seqs(good.messages)[1:] == list(range(base + 1, base + 101))
            stuck_conn = next(c for c in hub.connections if c.paused_since is not None)
            # Latest wins: it holds nothing beyond its transport buffer.
            assert stuck_conn.transport is not None
            assert stuck_conn.transport.get_write_buffer_size() < 200_000
            await eventually(lambda: _count(hub, 1), timeout=10)  # closed as too slow
        stuck.close()


async def _count(hub: Any, n: int) -> bool:
    return len(hub.connections) == n


async def test_a_peer_that_stops_answering_pings_is_dropped(stack: Stack) -> None:
    async with running_broadcaster(stack, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.3) as b:
        hub = b.broadcaster.hub
        silent = socket.create_connection(("127.0.0.1", b.settings.ws_port))
        silent.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with viewer(b.url) as alive:  # the client library answers pings by itself
            await alive.wait_for(lambda m: len(m) == 1)
            await eventually(lambda: _count(hub, 2), timeout=5)
            await eventually(lambda: _count(hub, 1), timeout=5)
            assert alive.ws.state.name == "OPEN"
        silent.close()


async def test_after_a_redis_restart_clients_get_a_fresh_snapshot(stack: Stack) -> None:
    own = RedisServer(free_ports(1)[0], stack.run_dir / f"redis-{os.getpid()}-resync")
    own.start()
    try:
        await eventually(own.ping, timeout=10)
        async with (
            running_broadcaster(stack, redis_url=own.url) as running,
            viewer(running.url) as v,
        ):
            await v.wait_for(lambda m: len(m) == 1)
            own.stop()
            await eventually(lambda: _not_ready(running), timeout=10)
            own.start()
            await eventually(own.ping, timeout=10)
            # While it was away, someone published (the state moved on).
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(own.url)
            top = [{"rank": 1, "userId": "while-away", "score": 5}]
            message = {"type": "top10", "seq": 4242, "top": top}
            await client.hset(
                "leaderboard:top10", mapping={"seq": 4242, "message": json.dumps(message)}
            )
            await client.aclose()
            messages = await v.wait_for(lambda m: m[-1]["seq"] == 4242, timeout=15)
        expected = {"type": "snapshot", "seq": 4242, "board": "all-time", "season": 1, "top": top}
        assert messages[-1] == expected
    finally:
        own.stop()


async def _not_ready(running: Running) -> bool:
    return not running.broadcaster.feed.ready


async def test_a_bad_token_is_refused_before_any_data(broadcaster: Running) -> None:
    assert await _refused(broadcaster.url + "?token=not.a.token") == (401, "invalid_token")

    token = auth.mint(broadcaster.settings, "viewer-1")
    async with viewer(
        broadcaster.url, additional_headers={"Authorization": f"Bearer {token}"}
    ) as v:
        assert (await v.wait_for(lambda m: len(m) == 1))[0]["type"] == "snapshot"


async def test_anonymous_viewers_are_refused_when_the_setting_says_so(stack: Stack) -> None:
    async with running_broadcaster(stack, ws_allow_anonymous=False) as running:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(running.url):
                pass
        assert refused.value.response.status_code == 401
        token = auth.mint(running.settings, "viewer-2")
        async with viewer(f"{running.url}?token={token}") as v:
            await v.wait_for(lambda m: len(m) == 1)


async def test_past_the_connection_limit_new_clients_are_closed_with_1013(stack: Stack) -> None:
    async with (
        running_broadcaster(stack, ws_max_connections=2) as running,
        viewer(running.url) as a,
        viewer(running.url) as b,
    ):
        await a.wait_for(lambda m: len(m) == 1)
        await b.wait_for(lambda m: len(m) == 1)
        async with connect(running.url) as third:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(third.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_http_endpoints_on_the_broadcaster_port(broadcaster: Running) -> None:
    async with httpx.AsyncClient(base_url=broadcaster.http) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        page = await client.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "new WebSocket" in page.text
        metrics = (await client.get("/metrics")).text
        for name in (
            "leaderboard_ws_connections",
            "leaderboard_ws_messages_sent_total",
            "leaderboard_ws_bytes_sent_total",
            "leaderboard_ws_fanout_seconds_bucket",
            "leaderboard_ws_slow_clients_closed_total",
            "leaderboard_ws_resyncs_total",
        ):
            assert name in metrics
        assert (await client.get("/nope")).status_code == 404


def test_sigterm_closes_every_client_with_1001(stack: Stack) -> None:
    port = free_ports(1)[0]
    proc = start_component(stack, "broadcaster", port)
    try:

        async def watch() -> list[int]:
            async with (
                connect(f"ws://127.0.0.1:{port}/ws") as a,
                connect(f"ws://127.0.0.1:{port}/ws") as b,
            ):
                await a.recv()
                await b.recv()
                proc.send_signal(signal.SIGTERM)
                codes = []
                for ws in (a, b):
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 15)
                    assert closed.value.rcvd is not None
                    codes.append(closed.value.rcvd.code)
                return codes

        assert asyncio.run(watch()) == [1001, 1001]
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_refusal_is_valid_json_whatever_its_message_says() -> None:
    from leaderboard.broadcaster.connection import _error

    message = 'no usable signing key: Unable to find a signing key that matches: "k9"'
    refusal = _error(401, "invalid_token", message)
    assert json.loads(refusal.body) == {"error": {"code": "invalid_token", "message": message}}


async def test_a_viewer_picks_its_board_and_gets_only_that_boards_updates(
    api: Api, broadcaster: Running, new_user: Callable[[], str]
) -> None:
    async with (
        viewer(broadcaster.url + "?board=weekly") as weekly,
        viewer(broadcaster.url) as all_time,
    ):
        first = (await weekly.wait_for(lambda m: len(m) == 1))[0]
        assert first["type"] == "snapshot" and first["board"] == "weekly"
        season = (await api.client.get("/api/leaderboards/weekly")).json()["season"]
        assert first["season"] == season
        await all_time.wait_for(lambda m: len(m) == 1)
        # Worth more than anyone's week: enters the weekly top 10 (the all-time one may not).
        user = new_user()
        for action, data in [
            ("final-exam", {"examId": "w", "score": 90}),
            ("quiz-basics", {"correct": 9}),
            ("first-lesson", None),
            ("seven-day-streak", {"days": 8}),
        ]:
            assert (await api.complete(user, action, data)).status_code == 200
        messages = await weekly.wait_for(
            lambda m: any(e["userId"] == user for e in m[-1]["top"]), timeout=5
        )
    updates = [m for m in messages if m["type"] == "top10"]
    assert updates and all(m["board"] == "weekly" for m in updates)
    # Published on membership changes (scores within it may have moved on since).
    page = (await api.client.get("/api/leaderboards/weekly")).json()["top"]
    assert {e["userId"] for e in messages[-1]["top"]} == {e["userId"] for e in page}
    assert all(m["board"] == "all-time" for m in all_time.messages)


async def test_an_unknown_board_is_refused_before_the_upgrade(broadcaster: Running) -> None:
    assert await _refused(broadcaster.url + "?board=nope") == (404, "unknown_board")
    async with httpx.AsyncClient() as client:
        listed = (await client.get(broadcaster.http + "/boards")).json()
    assert [b["id"] for b in listed["boards"]] == ["all-time", "weekly"]


async def test_only_the_allowed_origins_pages_may_open_a_websocket(stack: Stack) -> None:
    """Cross-site WebSocket hijacking: a page on another site must not open a socket with the
    viewer's credentials; non-browser clients (no Origin) are not affected."""
    allowed = "https://game.example, https://Admin.example:8443/"
    async with running_broadcaster(stack, ws_allowed_origins=allowed) as running:
        evil = "https://evil.example"
        assert await _refused(running.url, origin=evil) == (403, "forbidden")
        for origin in ("https://game.example", "https://admin.example:8443", None):
            async with connect(running.url, origin=origin) as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["type"] == "snapshot"
    evil_origin: Any = "https://evil.example"  # the default allows any origin
    async with (
        running_broadcaster(stack) as running,
        connect(running.url, origin=evil_origin) as ws,
    ):
        assert json.loads(await ws.recv())["type"] == "snapshot"


async def test_a_connection_that_never_completes_its_handshake_is_dropped(stack: Stack) -> None:
    async with running_broadcaster(stack, ws_handshake_timeout_s=0.5) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.settings.ws_port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        await writer.drain()
        # Dropped by the server at its deadline: EOF (or a reset), well before ours.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        writer.close()


async def test_an_open_socket_is_closed_with_4001_when_its_token_expires(stack: Stack) -> None:
    async with running_broadcaster(stack, ws_allow_anonymous=False) as running:
        token = auth.mint(running.settings, "short-lived", ttl=1.5)
        async with connect(f"{running.url}?token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "token expired")
