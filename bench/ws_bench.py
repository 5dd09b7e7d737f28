"""`make bench-ws`: 10,000 WebSocket clients on one broadcaster, against the bare library.

For each server (our broadcaster, a bare server that calls ``websockets.broadcast``, the
ceiling to beat, and the floor: a server that does nothing but one ``transport.write`` per
client, so what it measures is the kernel's loopback path), on its own Redis:

1. client processes (separate from the server) open N connections and wait for the first
   message of each: the connect time;
2. the server's RSS before and after, divided by N: memory per idle connection;
3. the publisher sends BROADCASTS messages of about 1 KB through Redis pub/sub, stamping each
   with the time it was published; every client records when each arrives. Reported: delivery
   latency p50/p99 over all (client, message) pairs, and per message the time until the last
   of the N clients had it (its p50/p99 over the messages).

The clients are a minimal WebSocket reader (an asyncio protocol that parses unmasked server
frames and answers pings), so the client side costs as little CPU as possible on this 2-core
machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import ws_writes  # noqa: E402
from bench.ws_clients import client_process  # noqa: E402
from bench.ws_feed import raise_fd_limit  # noqa: E402
from leaderboard_tools.devstack.redis import RedisServer  # noqa: E402
from tests.support import free_ports  # noqa: E402


def _subscribed(client: Any) -> bool:
    try:
        return bool(client.pubsub_numsub("leaderboard:updates")[0][1] >= 1)
    except OSError:
        return False
    except Exception as exc:  # redis-py's ConnectionError while the server starts
        if "connecting" in str(exc):
            return False
        raise


def server_fanout_ms(port: int) -> float | None:
    """Our broadcaster's own view: mean time from receipt to the write to the last client."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None  # the bare server has no metrics
    values = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith("leaderboard_ws_fanout")
    )
    count = float(values.get("leaderboard_ws_fanout_seconds_count", 0))
    total = float(values.get("leaderboard_ws_fanout_seconds_sum", 0))
    return round(total / count * 1000, 1) if count else None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def message(seq: int) -> bytes:
    top = [
        {"rank": i, "userId": f"player-{i:02d}-{'x' * 48}", "score": 100_000 - i * 37}
        for i in range(1, 11)
    ]
    body = {"type": "top10", "seq": seq, "top": top, "ts": 0, "sent": time.time()}
    return json.dumps(body, separators=(",", ":")).encode()


def measure(
    name: str, argv: list[str], env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lb-wsbench-"))
    redis = RedisServer(free_ports(1)[0], root / "redis")
    redis.start()
    port = free_ports(1)[0]
    server_env = {
        **env,
        "LEADERBOARD_WS_PORT": str(port),
        "LEADERBOARD_REDIS_URL": redis.url,
        "LEADERBOARD_RUN_DIR": str(root),
        "LEADERBOARD_WS_MAX_CONNECTIONS": str(args.clients + 100),
        "LEADERBOARD_WS_PING_INTERVAL_S": "300",
    }
    server = subprocess.Popen(argv, env=server_env, cwd=REPO, stdout=subprocess.DEVNULL)
    procs: list[multiprocessing.Process] = []
    try:
        import redis as redis_sync

        client = redis_sync.Redis.from_url(redis.url)
        deadline = time.monotonic() + 30
        while not _subscribed(client):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{name} did not subscribe")
            time.sleep(0.1)
        time.sleep(0.5)
        rss_before = rss_kib(server.pid)

        ctx = multiprocessing.get_context("spawn")
        per = args.clients // args.processes
        pipes = []
        for i in range(args.processes):
            parent, child = ctx.Pipe()
            share = per + (args.clients % args.processes if i == 0 else 0)
            proc = ctx.Process(target=client_process, args=(port, share, child))
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        connect_s = max(p.recv()[1] for p in pipes)
        time.sleep(1.0)
        rss_after = rss_kib(server.pid)

        sent: dict[int, float] = {}
        for seq in range(1, args.broadcasts + 1):
            payload = message(seq)
            sent[seq] = json.loads(payload)["sent"]
            client.publish("leaderboard:updates", payload)
            time.sleep(args.interval)
        time.sleep(1.0)
        fanout_ms = server_fanout_ms(port)
        for p in pipes:
            p.send("stop")
        arrivals: dict[int, list[float]] = {s: [] for s in sent}
        for p in pipes:
            for seq, at in p.recv()[1]:
                if seq in arrivals:
                    arrivals[seq].append(at)
        latencies = sorted((at - sent[s]) * 1000 for s, ats in arrivals.items() for at in ats)
        lasts = sorted((max(ats) - sent[s]) * 1000 for s, ats in arrivals.items() if ats)
        delivered = sum(len(a) for a in arrivals.values())
        return {
            "server": name,
            "clients": args.clients,
            "connect_s": round(connect_s, 2),
            "rss_per_conn_kib": round((rss_after - rss_before) / args.clients, 1),
            "broadcasts": args.broadcasts,
            "delivered": delivered,
            "expected": args.clients * args.broadcasts,
            "latency_p50_ms": round(statistics.median(latencies), 1),
            "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
            "last_client_p50_ms": round(statistics.median(lasts), 1),
            "last_client_p99_ms": round(lasts[max(0, int(len(lasts) * 0.99) - 1)], 1),
            "last_client_max_ms": round(lasts[-1], 1),
            "server_fanout_avg_ms": fanout_ms,
        }
    finally:
        for proc in procs:
            proc.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)


def render(results: list[dict[str, Any]]) -> str:
    rows = [
        "| Server | Clients | Connect all | RSS / idle conn. | Delivered | Latency p50 / p99 | "
        "Last client p50 / p99 / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['server']} | {r['clients']:,} | {r['connect_s']} s | "
            f"{r['rss_per_conn_kib']} KiB | {r['delivered']:,} / {r['expected']:,} | "
            f"{r['latency_p50_ms']} / {r['latency_p99_ms']} ms | "
            f"{r['last_client_p50_ms']} / {r['last_client_p99_ms']} / "
            f"{r['last_client_max_ms']} ms |"
        )
    r = results[0]
    if r.get("server_fanout_avg_ms") is not None:
        rows.append(
            f"\nOur broadcaster's own fan-out (receipt to the write to the last socket), mean: "
            f"{r['server_fanout_avg_ms']} ms for {r['clients']:,} connections."
        )
    rows.append(
        f"\nMeasured by `make bench-ws` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores; "
        f"{r['broadcasts']} broadcasts of about 1 KB through Redis; clients in separate "
        "processes on the same machine). Targets: last client p99 ≤ 100 ms, ≤ 15 KiB per "
        "idle connection."
    )
    return "\n".join(rows)


def main() -> int:
    # Stopped from outside (timeout, Ctrl-C in CI): still run the finally blocks that stop the
    # servers this benchmark started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--broadcasts", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between broadcasts")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument(
        "--no-writes", action="store_true", help="skip the run with completions flowing"
    )
    ws_writes.add_arguments(parser)
    args = parser.parse_args()
    raise_fd_limit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    results = [
        measure(
            "leaderboard broadcaster",
            [sys.executable, "-m", "leaderboard", "broadcaster"],
            env,
            args,
        ),
        measure(
            "bare `websockets.broadcast`",
            [sys.executable, "-m", "bench.bare_ws"],
            env,
            args,
        ),
        measure(
            "floor: one `transport.write` per client, nothing else",
            [sys.executable, "-m", "bench.raw_ws"],
            env,
            args,
        ),
    ]
    table = render(results)
    if not args.no_writes:
        # Commit-to-screen where it matters: with writes flowing (bench/ws_writes.py).
        writes = ws_writes.measure(args)
        table += "\n\nWith writes flowing:\n\n" + ws_writes.render(writes)
        results.append({"with_writes": writes})
    print("\n" + table)
    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "bench-ws.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.write_readme:
        readme = REPO / "README.md"
        pattern = re.compile(r"(<!-- bench-ws:begin -->\n).*?(<!-- bench-ws:end -->)", re.S)
        readme.write_text(
            pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), readme.read_text())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
