"""`make bench`: the API's hot paths against their bare components, in one run.

On a fresh local stack of its own (temporary folder, free ports):

1. pgbench runs the award transaction (the exact SQL of ``leaderboard.db.scores.AWARD_SQL``)
   with 32 clients: the database ceiling.
2. wrk sends POST /api/action/complete through the API at 64 connections, each request with the
   token of a fresh user (so every request is one real completion).
3. wrk reads GET /api/leaderboard at 64 connections.
4. wrk reads a bare endpoint on the same server stack (FastAPI + uvicorn, uvloop, httptools,
   constant body of the same size): the HTTP ceiling.

It prints the ratios and, with --write-readme, rewrites the README's performance section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from leaderboard import auth
from leaderboard.config import Settings
from leaderboard.db.scores import AWARD_SQL
from leaderboard.devstack.stack import Stack

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
from tests.support import stack_env  # noqa: E402  (shared with the test harness)


def pgbench_script() -> str:
    """AWARD_SQL with pgbench variables: a fresh random user per transaction."""
    sql = AWARD_SQL.replace("$1", "('pgb-' || :uid)").replace("$2", "'verify-email'")
    sql = sql.replace("$3::jsonb", "'{}'::jsonb").replace("$4", "'pgbench'")
    return "\\set uid random(1, 2000000000)\n" + " ".join(sql.split()) + ";\n"


def run_pgbench(stack: Stack, clients: int, duration: int) -> dict[str, float]:
    primary = stack.members[0]
    script = stack.run_dir / "award.pgbench"
    script.write_text(pgbench_script())
    env = {**os.environ, "PGPASSWORD": stack.app_password}
    argv = [
        shutil.which("pgbench") or str(primary.bin("pgbench")),
        "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(duration),
        "-h", primary.host, "-p", str(primary.port), "-U", stack.layout.pg_user,
        "-f", str(script), stack.layout.pg_database,
    ]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    return {"rps": tps, "latency_avg_ms": latency}


def run_wrk(
    url: str, connections: int, duration: int, script: list[str] | None = None
) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", script[0], url, "--", *script[1:]]
    else:
        argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "p50_ms": _wrk_latency(out, "50%"),
        "p99_ms": _wrk_latency(out, "99%"),
        "socket_errors": 1 if errors else 0,
    }


def _wrk_latency(out: str, pct: str) -> float:
    match = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the highest throughput: the machine is shared, noise only slows it."""
    return max(runs, key=lambda r: r["rps"])


def seed_scores(stack: Stack, users: int = 5000) -> None:
    """Give the read path a realistic sorted set (and let the API rebuild it from PostgreSQL)."""

    async def seed() -> None:
        import asyncpg
        import redis.asyncio as aioredis

        conn = await asyncpg.connect(stack.database_url(stack.members[0]))
        try:
            await conn.execute(
                "INSERT INTO scores (user_id, score, reached_seq) SELECT 'seed-' || i, "
                "(i * 7919) % 500, nextval('score_reached_seq') FROM generate_series(1, $1) i "
                "ON CONFLICT DO NOTHING",
                users,
            )
        finally:
            await conn.close()
        client = aioredis.Redis.from_url(stack.redis.url)
        await client.hdel("leaderboard:top10", "ranking")  # the API rebuilds on its next read
        await client.aclose()

    asyncio.run(seed())
    wait_http(stack.api_url + "/api/leaderboard")


def worker_cpu(stack: Stack) -> dict[int, float]:
    """CPU seconds used so far by each API server process (to see how load spread)."""
    api = next(c for c in stack.components if c.name == "api")
    root = api.pid()
    pids = [root] if root else []
    if root:
        children = Path(f"/proc/{root}/task/{root}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
    tick = os.sysconf("SC_CLK_TCK")
    usage = {}
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        usage[pid] = (int(fields[11]) + int(fields[12])) / tick
    if len(usage) > 1:
        usage.pop(root)  # the parent only supervises
    return usage


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def main() -> int:
    # Stopped from outside (timeout, Ctrl-C in CI): still run the finally blocks that stop the
    # servers this benchmark started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pgbench-clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="API server processes")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1

    root = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    root.chmod(0o755)
    env = stack_env(root / "run")
    env["LEADERBOARD_API_WORKERS"] = str(args.workers)
    os.environ.update(env)
    settings = Settings()
    stack = Stack.from_settings(settings, services=True)
    results: dict[str, Any] = {}
    bare: subprocess.Popen[bytes] | None = None
    d, warm = args.duration, max(2, args.duration // 5)
    try:
        asyncio.run(stack.start())
        api = stack.api_url
        port = int(env["LEADERBOARD_WS_PORT"])  # free, unused by this stack
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
             "warning", "--no-server-header"],
            cwd=REPO,
        )  # fmt: skip
        bare_url = f"http://127.0.0.1:{port}/bare"
        wait_http(bare_url)

        # Reads first (writes leave checkpoints and vacuum behind), best of the rounds.
        seed_scores(stack)
        top_runs, bare_runs = [], []
        for _ in range(args.rounds):
            print(f"api: GET /api/leaderboard, {args.connections} connections, {d} s")
            run_wrk(api + "/api/leaderboard", args.connections, warm)
            top_runs.append(run_wrk(api + "/api/leaderboard", args.connections, d))
            print(f"bare: GET /bare on the same server stack, {args.connections} connections")
            run_wrk(bare_url, args.connections, warm)
            bare_runs.append(run_wrk(bare_url, args.connections, d))
        results["api_top10"] = best(top_runs)
        results["bare_endpoint"] = best(bare_runs)

        lua = str(HERE / "complete.lua")
        pg_runs, api_runs = [], []
        cpu_before = worker_cpu(stack)
        for round_ in range(args.rounds):
            tokens = stack.run_dir / f"tokens-{round_}.txt"  # fresh users for every run
            users = (f"b{round_}-{i}" for i in range((d + warm) * 9_000))
            tokens.write_text("\n".join(auth.mint(settings, u) for u in users) + "\n")
            print(f"pgbench: award transaction, {args.pgbench_clients} clients, {d} s")
            run_pgbench(stack, args.pgbench_clients, warm)
            pg_runs.append(run_pgbench(stack, args.pgbench_clients, d))
            print(f"api: POST /api/action/complete, {args.connections} connections, {d} s")
            api_runs.append(run_wrk(api, args.connections, d + warm, [lua, str(tokens), "1"]))
        results["pgbench_award"] = best(pg_runs)
        results["api_complete"] = best(api_runs)
        spent = [after - cpu_before.get(pid, 0.0) for pid, after in worker_cpu(stack).items()]
        results["api_worker_cpu_s"] = [round(x, 1) for x in spent if x >= 0.1]
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)

    results["ratios"] = {
        "complete_vs_pgbench": results["api_complete"]["rps"] / results["pgbench_award"]["rps"],
        "top10_vs_bare": results["api_top10"]["rps"] / results["bare_endpoint"]["rps"],
    }
    results["setup"] = {
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "api_workers": args.workers,
        "connections": args.connections,
        "pgbench_clients": args.pgbench_clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d"),
    }
    table = render(results)
    print("\n" + table)
    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "bench-api.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.write_readme:
        write_readme(table)
    return 0


def render(r: dict[str, Any]) -> str:
    s = r["setup"]
    rows = [
        "| Path | Requests/s | p50 | p99 | Compared with | Ratio | Target |",
        "|---|---|---|---|---|---|---|",
        f"| POST /api/action/complete ({s['connections']} conn.) | "
        f"{r['api_complete']['rps']:,.0f} | {r['api_complete']['p50_ms']:.1f} ms | "
        f"{r['api_complete']['p99_ms']:.1f} ms | pgbench, same SQL, {s['pgbench_clients']} "
        f"clients: {r['pgbench_award']['rps']:,.0f} TPS | "
        f"**{r['ratios']['complete_vs_pgbench']:.0%}** | ≥ 50% |",
        f"| GET /api/leaderboard ({s['connections']} conn.) | {r['api_top10']['rps']:,.0f} | "
        f"{r['api_top10']['p50_ms']:.1f} ms | {r['api_top10']['p99_ms']:.1f} ms | bare endpoint, "
        f"same stack: {r['bare_endpoint']['rps']:,.0f} req/s | "
        f"**{r['ratios']['top10_vs_bare']:.0%}** | ≥ 80% |",
    ]
    notes = (
        f"\nMeasured by `make bench` on {s['date']} ({s['machine']}, {s['api_workers']} API "
        f"server process(es) sharing the port with SO_REUSEPORT, CPU seconds each during the "
        f"write runs: {r['api_worker_cpu_s']}; best of {s['rounds']} runs of "
        f"{s['duration_s']} s; load generators, PostgreSQL primary and standby, Redis and the "
        f"API all on the same machine). Non-2xx answers during the completion run: "
        f"{r['api_complete']['non_2xx']} of {r['api_complete']['requests']}."
    )
    return "\n".join(rows) + "\n" + notes


def write_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(<!-- bench:end -->)", re.S)
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))


if __name__ == "__main__":
    raise SystemExit(main())
