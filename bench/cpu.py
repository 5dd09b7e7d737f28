"""CPU accounting from /proc: by kind of process during a run, per request, per API worker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from leaderboard_tools.devstack.stack import Stack


def _cpu_ticks() -> dict[str, float]:
    """CPU seconds used so far, by kind of process: each member's postgres processes, redis,
    the load generators, the API. A process's reaped children count for it (cutime), so the
    postmaster carries its exited backends and this process the wrk and pgbench it ran."""
    tick = os.sysconf("SC_CLK_TCK")
    usage: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        member = re.search(r"cluster_name=(\S+)|^postgres: ([^:]+):", " ".join(argv))
        if comm == "postgres" and member:
            kind = "postgres " + (member.group(1) or member.group(2))
        elif comm in ("wrk", "pgbench") or int(proc.name) == os.getpid():
            kind = "load generator"
        elif comm.startswith("redis"):
            kind = "redis"
        elif comm.startswith(("python", "leaderboard", "uvicorn")):
            kind = "api"
        else:
            kind = "other"
        used = sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
        usage[kind] = usage.get(kind, 0.0) + used
    return usage


def measure_cpu(run: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Run ``run()``; return its result and the CPU microseconds per request of each kind
    of process during it (plus ``idle``: the machine's unused CPU per request)."""

    def idle() -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")

    before, idle_before = _cpu_ticks(), idle()
    result = run()
    after, idle_after = _cpu_ticks(), idle()
    served = result["requests"]
    per_request = {
        kind: round((used - before.get(kind, 0.0)) / served * 1e6)
        for kind, used in sorted(after.items())
        if used - before.get(kind, 0.0) > 0.05
    }
    per_request["idle"] = round((idle_after - idle_before) / served * 1e6)
    return result, per_request


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
    if root is not None and len(usage) > 1:
        usage.pop(root)  # the parent only supervises
    return usage
