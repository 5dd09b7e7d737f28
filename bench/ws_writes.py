"""`make bench-ws`, with writes: commit-to-screen while completions flow through the API.

A stack of its own (PostgreSQL primary + synchronous standby, Redis, the API, the broadcaster),
``--viewers`` lean WebSocket clients (the same minimal reader as the fan-out bench, in separate
processes) and two kinds of load through the API:

- background: ``--background`` completions/s of fresh users (10 points each, never enough to
  enter the top 10), keep-alive HTTP/1.1 connections, a raw client that costs little CPU;
- changes: one changer that, every ``--change-interval`` s, makes a user outside the top 10
  complete a repeatable 1,000-point action (a bench catalog), so it enters the top 10: a
  real membership change, from the completion's commit to the broadcast.

Per change: the completion's acknowledgement (the API's 200 arrived at the changer) to the
last viewer's receipt of the broadcast it caused (commit-to-screen), and the split: Redis's
publish time (``ts`` in the message, Redis's clock) to the acknowledgement, and to the last
receipt. Everything on one machine, so one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ws_clients import client_process  # noqa: E402
from bench.ws_feed import raise_fd_limit  # noqa: E402
from leaderboard import auth  # noqa: E402
from leaderboard.catalog import default_catalog_text  # noqa: E402
from leaderboard.config import Settings  # noqa: E402
from leaderboard_tools.devstack.stack import Stack  # noqa: E402
from tests.support import stack_env  # noqa: E402

BUMP = """
  - id: bench-bump
    title: A big step (bench)
    points: 1000
    repeat: 1
"""
CHANGERS = 11  # one more than the top 10: there is always someone outside it


def _request(settings: Settings, user: str, action: str) -> bytes:
    body = json.dumps({"actionId": action}).encode()
    token = auth.mint(settings, user, ttl=3600)
    return (
        f"POST /api/action/complete HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Http:
    """One keep-alive HTTP/1.1 connection, one request at a time: status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Http:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)


def background_process(settings_env: dict[str, str], host: str, port: int, rate: float) -> None:
    """Fresh users completing a 10-point action at ``rate`` per second until killed."""
    os.environ.update(settings_env)
    import uvloop

    settings = Settings()

    async def main() -> None:
        connections = [await Http.open(host, port) for _ in range(8)]
        interval = len(connections) / rate

        async def loop(http: Http, offset: float) -> None:
            await asyncio.sleep(offset)
            next_at = time.monotonic()
            while True:
                await http.send(_request(settings, f"bg-{uuid.uuid4().hex[:12]}", "verify-email"))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.gather(
            *(loop(c, i * interval / len(connections)) for i, c in enumerate(connections))
        )

    uvloop.run(main())


async def _changes(
    settings: Settings, stack: Stack, duration: float, interval: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the changer and a subscriber; (changes, published messages)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(stack.redis.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("leaderboard:updates")
    published: list[dict[str, Any]] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                published.append(json.loads(message["data"]))

    listener = asyncio.create_task(listen())
    http = await Http.open(stack.layout.host, stack.layout.api_port)
    users = [f"changer-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(CHANGERS)]
    rank: dict[str, int | None] = dict.fromkeys(users)
    last_bump: dict[str, float] = dict.fromkeys(users, 0.0)
    changes: list[dict[str, Any]] = []
    # Fill the top 10 first (no measurement): every changer gets its first 1,000 points.
    for user in users:
        status, body = await http.send(_request(settings, user, "bench-bump"))
        assert status == 200, body
        rank[user], last_bump[user] = json.loads(body)["rank"], time.monotonic()
    end = time.monotonic() + duration
    while time.monotonic() < end:
        await asyncio.sleep(interval)
        # Someone outside the top 10 whose 1 s repeat period has passed.
        ready = [
            u
            for u in users
            if (rank[u] is None or rank[u] > 10) and time.monotonic() - last_bump[u] > 1.05
        ]
        if not ready:
            continue
        user = ready[0]
        sent = time.time()
        status, body = await http.send(_request(settings, user, "bench-bump"))
        acked = time.time()
        last_bump[user] = time.monotonic()
        if status != 200:
            continue  # the same 1 s period after all (clocks): try again later
        new_rank = json.loads(body)["rank"]
        if new_rank is not None and new_rank <= 10:
            changes.append({"user": user, "sent": sent, "acked": acked})
        # Everyone's rank moved: one read tells who is outside now.
        for u in users:
            rank[u] = None
        top = await client.zrevrange("leaderboard:scores", 0, 9)
        for i, member in enumerate(top, 1):
            if member.decode() in rank:
                rank[member.decode()] = i
        for u in users:
            if rank[u] is None:
                rank[u] = 11
    await asyncio.sleep(1.0)
    listener.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()
    return changes, published


async def _background_done(stack: Stack) -> int:
    """How many background completions committed so far."""
    import asyncpg

    conn = await asyncpg.connect(stack.database_url(stack.members[0]))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM scores WHERE user_id LIKE 'bg-%'"))
    finally:
        await conn.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * q) - 1)], 1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lb-wswrites-"))
    root.chmod(0o755)
    catalog = root / "catalog.yaml"
    catalog.write_text(default_catalog_text().rstrip() + "\n" + BUMP)
    env = {
        **stack_env(root / "run"),
        "LEADERBOARD_CATALOG_PATH": str(catalog),
        "LEADERBOARD_RATE_LIMIT": "1000000",
        "LEADERBOARD_WS_MAX_CONNECTIONS": str(args.viewers + 100),
    }
    os.environ.update(env)
    settings = Settings()
    stack = Stack.from_settings(settings, services=True)
    procs: list[multiprocessing.Process] = []
    try:
        asyncio.run(stack.start())
        ctx = multiprocessing.get_context("spawn")
        pipes = []
        per = args.viewers // args.processes
        for i in range(args.processes):
            parent, child = ctx.Pipe()
            share = per + (args.viewers % args.processes if i == 0 else 0)
            proc = ctx.Process(target=client_process, args=(stack.layout.ws_port, share, child))
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        for p in pipes:
            p.recv()  # connected
        background = ctx.Process(
            target=background_process,
            args=(env, stack.layout.host, stack.layout.api_port, args.background),
        )
        background.start()
        procs.append(background)
        time.sleep(2.0)  # the background load settles
        before, started = asyncio.run(_background_done(stack)), time.monotonic()
        changes, published = asyncio.run(
            _changes(settings, stack, args.duration, args.change_interval)
        )
        achieved = (asyncio.run(_background_done(stack)) - before) / (time.monotonic() - started)
        for p in pipes:
            p.send("stop")
        arrivals: dict[int, list[float]] = {}
        for p in pipes:
            for seq, at in p.recv()[1]:
                arrivals.setdefault(seq, []).append(at)
    finally:
        for proc in procs:
            proc.kill()
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)

    to_screen, publish_to_ack, publish_to_screen = [], [], []
    for change in changes:
        # The broadcast this completion caused: published while it was in flight, with the user.
        message = next(
            (
                m
                for m in published
                if change["sent"] * 1000 - 1 <= m["ts"] <= change["acked"] * 1000 + 1
                and any(e["userId"] == change["user"] for e in m["top"])
            ),
            None,
        )
        if message is None or len(arrivals.get(message["seq"], [])) < args.viewers:
            continue
        last = max(arrivals[message["seq"]])
        to_screen.append((last - change["acked"]) * 1000)
        publish_to_ack.append(change["acked"] * 1000 - message["ts"])
        publish_to_screen.append(last * 1000 - message["ts"])
    if not to_screen:
        raise RuntimeError("no change was delivered to every viewer")
    return {
        "viewers": args.viewers,
        "background_per_s": round(achieved),
        "changes": len(to_screen),
        "commit_to_screen_p50_ms": round(statistics.median(to_screen), 1),
        "commit_to_screen_p99_ms": _pct(to_screen, 0.99),
        "publish_to_ack_p50_ms": round(statistics.median(publish_to_ack), 1),
        "publish_to_last_screen_p50_ms": round(statistics.median(publish_to_screen), 1),
        "publish_to_last_screen_p99_ms": _pct(publish_to_screen, 0.99),
    }


def render(r: dict[str, Any]) -> str:
    return (
        "| Viewers | Background writes | Changes | Commit-to-screen p50 / p99 | Publish to ack p50 "
        "| Publish to last screen p50 / p99 |\n|---|---|---|---|---|---|\n"
        f"| {r['viewers']:,} | {r['background_per_s']}/s | {r['changes']} | "
        f"{r['commit_to_screen_p50_ms']} / {r['commit_to_screen_p99_ms']} ms | "
        f"{r['publish_to_ack_p50_ms']} ms | {r['publish_to_last_screen_p50_ms']} / "
        f"{r['publish_to_last_screen_p99_ms']} ms |\n\n"
        f"Measured by `make bench-ws` (with writes) on {time.strftime('%Y-%m-%d')} "
        f"({os.cpu_count()} cores; the changes are real completions through the API that enter "
        "the top 10; commit-to-screen: the completion's 200 at the client to the last viewer's "
        "receipt of the broadcast; everything on one machine). Target: p99 ≤ 50 ms."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--background", type=float, default=200.0, help="completions/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of changes")
    parser.add_argument("--change-interval", type=float, default=0.25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--processes", type=int, default=2, help="viewer processes")
    args = parser.parse_args()
    raise_fd_limit()
    result = measure(args)
    print("\n" + render(result))
    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "bench-ws-writes.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
