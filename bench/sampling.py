"""py-spy under load: a flame graph per API process and a summary of where its samples fell.

py-spy samples wall-clock time on the CPU or runnable: a process preempted inside a syscall
(a loopback write that woke its peer) counts there. For CPU alone use
``perf record -e cpu-clock -g -p PID`` (docs/performance.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from leaderboard_tools.devstack.stack import Stack

REPO = Path(__file__).resolve().parent.parent


def profile_writes(stack: Stack, pids: list[int], duration: int, load: Any) -> None:
    """Sample each API process with py-spy while ``load`` runs: an SVG flame graph per
    process and a summary of the functions with the most samples (own and inclusive)."""
    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    spies = []
    for pid in pids:
        raw = reports / f"profile-complete-{pid}.txt"
        cmd = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",  # blocking (pauses the process per sample): py-spy's --native needs it
            "-r",
            "250",
            "-d",
            str(duration),
            "--native",  # C frames too: syscalls, the collector, asyncpg's and uvloop's own
            "-p",
        ]
        spies.append((raw, [
            subprocess.Popen([*cmd, str(pid), "-f", "raw", "-o", str(raw)]),
            subprocess.Popen([*cmd, str(pid), "-o", str(raw.with_suffix(".svg"))]),
        ]))  # fmt: skip
    load()
    for raw, procs in spies:
        failed = [proc.args for proc in procs if proc.wait() != 0]
        if failed or not raw.exists():
            print(f"\npy-spy failed ({failed}): no profile of this process")
            continue
        print(f"\n{raw.with_suffix('.svg')}\n{summarise_stacks(raw.read_text())}")


def summarise_stacks(collapsed: str, top: int = 25) -> str:
    """py-spy's collapsed stacks -> the functions with the most samples, as % of all."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \((.*/)?(site-packages/)?", " (", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    lines = [f"{total} samples; own %, inclusive %, function"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * own.get(frame, 0) / total:5.1f} {100 * n / total:5.1f}  {frame}")
    lines.append("-- most own time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:5.1f} {100 * inclusive[frame] / total:5.1f}  {frame}")
    return "\n".join(lines)
