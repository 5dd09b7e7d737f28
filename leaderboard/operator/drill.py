"""``leaderboard drill failover``: break the primary under write load and report what happened.

While writers complete actions through the API as fast as it answers (each write a fresh
user, so every acknowledged write is one row we can look for), the drill kills the primary
(``kill``: SIGKILL; ``hang``: SIGSTOP, then SIGCONT once a new primary took over), or kills a
standby (``standby``: with durability "required" writes wait until it is back), and measures:

- detection: fault -> the operator's decision to promote;
- promotion: fault -> the new primary promoted;
- write downtime: fault -> the first acknowledged write of a request sent after the fault;
- lost writes: acknowledged writes missing on the new primary afterwards (must be 0);
- demoted acks: of those, the ones acknowledged after the promotion (a demoted primary
  acknowledging writes; must be 0);
- rejoin: fault -> the old primary streaming again as a replica (target: within 30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx

from leaderboard import auth
from leaderboard.config import Settings
from leaderboard.devstack.process import signal_tree
from leaderboard.devstack.stack import Stack

Fault = Literal["kill", "hang", "standby"]


@dataclass
class DrillResult:
    fault: Fault
    old_primary: str
    new_primary: str | None
    detection_s: float | None
    promotion_s: float | None
    write_downtime_s: float | None
    acknowledged: int
    failed_requests: int
    lost_writes: int
    demoted_acks: int
    rejoined_s: float | None
    fault_at: float = 0.0  # Unix time of the fault
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, ok, failed)/s


class Load:
    """Writers completing actions through the API; every acknowledgement is remembered."""

    def __init__(self, api_url: str, settings: Settings, writers: int = 8) -> None:
        self.api_url = api_url
        self.settings = settings
        self.writers = writers
        self.acks: list[tuple[str, float, float]] = []  # (user, sent, acknowledged)
        self.failures: list[float] = []
        self._stop = asyncio.Event()
        self._run = uuid.uuid4().hex[:8]

    async def _writer(self, client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            user = f"drill-{self._run}-{n}-{i}"
            token = auth.mint(self.settings, user, ttl=600)
            sent = time.time()
            try:
                response = await client.post(
                    "/api/action/complete",
                    json={"actionId": "verify-email"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.acks.append((user, sent, time.time()))
            else:
                self.failures.append(time.time())
                await asyncio.sleep(0.05)  # a failing API is retried, not hammered

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(base_url=self.api_url, timeout=5.0)
        self._tasks = [
            asyncio.create_task(self._writer(self._client, n)) for n in range(self.writers)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


def _events_after(path: Path, since: float) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, lines) if e["ts"] >= since]


async def _wait(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


async def drill_once(stack: Stack, settings: Settings, fault: Fault) -> DrillResult:
    status = await stack.status()
    if not status["running"] or status["primary"] is None:
        raise RuntimeError("the local stack is not running (leaderboard up --detach)")
    old = next(m for m in status["members"] if m["role"] == "primary")
    victim = old
    if fault == "standby":
        victim = next(m for m in status["members"] if m["role"] == "replica")
    events = stack.run_dir / "operator.jsonl"
    async with Load(status["api_url"], settings) as load:
        if not await _wait(lambda: _true(len(load.acks) >= 20), 15):
            raise RuntimeError("the API acknowledges no writes before the fault")
        fault_at = time.time()
        if fault == "hang":  # a hung server: the postmaster and every backend stop
            signal_tree(victim["pid"], signal.SIGSTOP)
        else:  # a crash: the postmaster dies, its backends notice and exit
            os.kill(victim["pid"], signal.SIGKILL)

        async def promoted() -> bool:
            return any(e["action"] == "promoted" for e in _events_after(events, fault_at))

        if fault != "standby":
            await _wait(promoted, 60)
        if fault == "hang":  # the old primary wakes up after the failover (it was fenced)
            signal_tree(old["pid"], signal.SIGCONT)

        async def written_after() -> bool:
            return any(sent > fault_at for _, sent, _ in load.acks)

        await _wait(written_after, 60)
        await asyncio.sleep(1.0)  # a little steady state after recovery

    after = _events_after(events, fault_at)
    decided = next((e for e in after if e["action"] == "promote"), None)
    promoted_event = next((e for e in after if e["action"] == "promoted"), None)
    first_ack = min((ack for _, sent, ack in load.acks if sent > fault_at), default=None)

    async def rejoined() -> bool:
        members = (await stack.status())["members"]
        return any(m["name"] == victim["name"] and m["role"] == "replica" for m in members)

    await _wait(rejoined, 30, interval=0.2)
    rejoined_event = next(
        (e for e in _events_after(events, fault_at) if e["action"] == "rejoined"), None
    )
    new_status = await stack.status()
    lost, demoted = await _verify(new_status["database_url"], load, promoted_event)
    return DrillResult(
        fault=fault,
        old_primary=old["name"],
        new_primary=new_status["primary"],
        detection_s=_since(decided, fault_at),
        promotion_s=_since(promoted_event, fault_at),
        write_downtime_s=None if first_ack is None else round(first_ack - fault_at, 3),
        acknowledged=len(load.acks),
        failed_requests=len(load.failures),
        lost_writes=lost,
        demoted_acks=demoted,
        rejoined_s=_since(rejoined_event, fault_at) if await rejoined() else None,
        fault_at=fault_at,
        timeline=_timeline(load, fault_at),
    )


async def _true(value: bool) -> bool:
    return value


def _since(event: dict[str, Any] | None, t0: float) -> float | None:
    return None if event is None else round(event["ts"] - t0, 3)


async def _verify(
    database_url: str, load: Load, promoted: dict[str, Any] | None
) -> tuple[int, int]:
    """Acknowledged writes missing on the current primary, and those acked after promotion."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        users = [u for u, _, _ in load.acks]
        found = {
            r["user_id"]
            for r in await conn.fetch(
                "SELECT user_id FROM completions WHERE user_id = ANY($1::text[])", users
            )
        }
    finally:
        await conn.close()
    missing = [(u, ack) for u, _, ack in load.acks if u not in found]
    cutoff = promoted["ts"] if promoted else float("inf")
    return len(missing), sum(1 for _, ack in missing if ack > cutoff)


def _timeline(load: Load, t0: float) -> list[tuple[float, int, int]]:
    """Acknowledged and failed requests per 0.5 s, relative to the fault."""
    buckets: dict[float, list[int]] = {}
    for _, _, ack in load.acks:
        buckets.setdefault(round((ack - t0) * 2) / 2, [0, 0])[0] += 1
    for t in load.failures:
        buckets.setdefault(round((t - t0) * 2) / 2, [0, 0])[1] += 1
    return [(t, ok, bad) for t, (ok, bad) in sorted(buckets.items())]


async def drill(stack: Stack, settings: Settings, fault: Fault, count: int) -> list[DrillResult]:
    results = []
    for _ in range(count):
        results.append(await drill_once(stack, settings, fault))
        await asyncio.sleep(1.0)
    return results


def summary(results: list[DrillResult]) -> dict[str, Any]:
    downtimes = [r.write_downtime_s for r in results if r.write_downtime_s is not None]
    return {
        "drills": len(results),
        "downtime_median_s": round(statistics.median(downtimes), 3) if downtimes else None,
        "downtime_max_s": max(downtimes) if downtimes else None,
        "lost_writes": sum(r.lost_writes for r in results),
        "demoted_acks": sum(r.demoted_acks for r in results),
        "all_rejoined": all(r.rejoined_s is not None for r in results),
        "rejoin_max_s": max((r.rejoined_s or 0 for r in results), default=None),
    }


def report(results: list[DrillResult], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"summary": summary(results), "runs": [asdict(r) for r in results]}, indent=2
        )
    lines = [
        f"{'#':>2} {'fault':5} {'from':8} {'to':8} {'detect':>7} {'promote':>8} "
        f"{'downtime':>9} {'acked':>6} {'failed':>6} {'lost':>4} {'demoted':>7} {'rejoin':>7}"
    ]
    for i, r in enumerate(results, 1):
        lines.append(
            f"{i:>2} {r.fault:5} {r.old_primary:8} {r.new_primary or '-':8} "
            f"{_fmt(r.detection_s):>7} {_fmt(r.promotion_s):>8} {_fmt(r.write_downtime_s):>9} "
            f"{r.acknowledged:>6} {r.failed_requests:>6} {r.lost_writes:>4} "
            f"{r.demoted_acks:>7} {_fmt(r.rejoined_s):>7}"
        )
    s = summary(results)
    lines.append(
        f"\nwrite downtime median {_fmt(s['downtime_median_s'])}, max {_fmt(s['downtime_max_s'])}"
        f" (goal: median <= 3 s, max <= 5 s); lost acknowledged writes {s['lost_writes']}; "
        f"acknowledged by a demoted primary {s['demoted_acks']}; all rejoined: {s['all_rejoined']}"
    )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
