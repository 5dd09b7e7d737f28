"""``leaderboard drill failover``: break the primary under write load and report what happened.

While writers complete actions through the API as fast as it answers (each write a fresh
user, so every acknowledged write is one row we can look for), the drill kills the primary
(``kill``: SIGKILL; ``hang``: SIGSTOP, then SIGCONT once a new primary took over), or kills a
standby (``standby``: with durability "required" writes wait until it is back), and measures:

- detection: fault -> the operator's decision to promote;
- promotion: fault -> the new primary promoted;
- write downtime: the longest time, from the fault on, in which no write was acknowledged
  (from the last acknowledgement before the fault). Measured on the acknowledgements alone,
  it does not depend on when a fault sent through kubectl really lands; none (the drill
  failed) unless a write sent after the fault landed was acknowledged;
- lost writes: acknowledged writes missing on the new primary afterwards (must be 0;
  unknown, and the drill failed, when no member answers as primary within 30 s);
- demoted acks: of those, the ones acknowledged after the promotion (a demoted primary
  acknowledging writes; must be 0);
- rejoin: fault -> the old primary streaming again as a replica (target: within 30 s).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import signal
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import asyncpg
import httpx

from leaderboard import auth
from leaderboard.config import Settings
from leaderboard_tools.devstack.process import StackError, signal_tree
from leaderboard_tools.devstack.stack import Stack

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
    lost_writes: int | None  # None: no primary answered afterwards, nothing could be checked
    demoted_acks: int | None
    rejoined_s: float | None
    fault_at: float = 0.0  # Unix time of the fault
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, ok, failed)/s


class Load:
    """Writers completing actions through the API; every acknowledgement is remembered."""

    def __init__(
        self,
        api_url: str,
        settings: Settings,
        writers: int = 8,
        actions: Sequence[tuple[str, dict[str, Any]]] = (("verify-email", {}),),
        seed: int = 0,
    ) -> None:
        self.api_url = api_url
        self.settings = settings
        self.writers = writers
        self.actions = list(actions)  # each write: a fresh user completing one of these
        self._rng = random.Random(seed)  # noqa: S311 - a schedule, not a secret
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
            action, data = self._rng.choice(self.actions)
            sent = time.time()
            try:
                response = await client.post(
                    "/api/action/complete",
                    json={"actionId": action, "data": data},
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


class Target(Protocol):
    """What a drill breaks and watches: the local stack, or a cluster through kubectl."""

    async def api_url(self) -> str: ...

    async def members(self) -> tuple[str | None, dict[str, str]]:
        """The current primary and every member's role (primary, replica or down)."""

    async def inject(self, fault: Fault, victim: str) -> None: ...

    async def heal(self, fault: Fault, victim: str) -> None:
        """After the failover: wake a hung member (the operator has fenced it)."""

    async def decisions(self, since: float) -> dict[str, float]:
        """When the operator decided to promote and when it had promoted (Unix times)."""

    async def stored(self, primary: str, users: list[str]) -> set[str]:
        """Of these users, those whose completion ``primary`` holds."""


class LocalTarget:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._pids: dict[str, int] = {}

    async def api_url(self) -> str:
        return self.stack.api_url

    async def members(self) -> tuple[str | None, dict[str, str]]:
        status = await self.stack.status()
        if not status["running"]:
            raise StackError("the local stack is not running (leaderboard up --detach)")
        self._pids = {m["name"]: m["pid"] for m in status["members"] if m["pid"]}
        return status["primary"], {m["name"]: m["role"] for m in status["members"]}

    async def inject(self, fault: Fault, victim: str) -> None:
        pid = self._pids[victim]
        if fault == "hang":  # a hung server: the postmaster and every backend stop
            signal_tree(pid, signal.SIGSTOP)
        else:  # a crash: the postmaster dies, its backends notice and exit
            os.kill(pid, signal.SIGKILL)

    async def heal(self, fault: Fault, victim: str) -> None:
        if fault == "hang":
            signal_tree(self._pids[victim], signal.SIGCONT)

    async def decisions(self, since: float) -> dict[str, float]:
        try:
            lines = (self.stack.run_dir / "operator.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return {}
        found: dict[str, float] = {}
        for event in map(json.loads, lines):
            if event["ts"] >= since and event["action"] in ("promote", "promoted"):
                found.setdefault(event["action"], event["ts"])
        return found

    async def stored(self, primary: str, users: list[str]) -> set[str]:
        member = next(m for m in self.stack.members if m.name == primary)
        conn = await asyncpg.connect(self.stack.database_url(member), timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT user_id FROM completions WHERE user_id = ANY($1::text[])", users
            )
        finally:
            await conn.close()
        return {r["user_id"] for r in rows}


async def wait_until_true(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` (plain or async) until it holds; False past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return True
        await asyncio.sleep(interval)
    return False


async def drill_once(target: Target, settings: Settings, fault: Fault) -> DrillResult:
    old, roles = await target.members()
    if old is None:
        raise RuntimeError("no primary to fail over from")
    victim = old
    if fault == "standby":
        victim = next(name for name, role in roles.items() if role == "replica")
    async with Load(await target.api_url(), settings) as load:
        if not await wait_until_true(lambda: len(load.acks) >= 20, 15):
            raise RuntimeError("the API acknowledges no writes before the fault")
        fault_at = time.time()
        await target.inject(fault, victim)
        landed = time.time()  # kubectl has returned: the fault is in place by now

        async def promoted() -> bool:
            return "promoted" in await target.decisions(fault_at)

        if fault != "standby":
            await wait_until_true(promoted, 60, interval=0.1)
        await target.heal(fault, victim)

        async def written_after() -> bool:
            return any(sent > landed for _, sent, _ in load.acks)

        await wait_until_true(written_after, 60)
        await asyncio.sleep(1.0)  # a little steady state after recovery

    decided = await target.decisions(fault_at)

    async def rejoined() -> bool:
        return (await target.members())[1].get(victim) == "replica"

    rejoined_s = None
    if await wait_until_true(rejoined, 30, interval=0.2):
        rejoined_s = round(time.time() - fault_at, 3)
    new: str | None = None

    async def primary_answers() -> bool:
        nonlocal new
        new = (await target.members())[0]
        return new is not None

    lost = demoted = None
    if await wait_until_true(primary_answers, 30, interval=0.2):
        assert new is not None
        found = await target.stored(new, [u for u, _, _ in load.acks])
        missing = [ack for u, _, ack in load.acks if u not in found]
        cutoff = decided.get("promoted", float("inf"))
        lost, demoted = len(missing), sum(1 for ack in missing if ack > cutoff)
    return DrillResult(
        fault=fault,
        old_primary=old,
        new_primary=new,
        detection_s=_since(decided.get("promote"), fault_at),
        promotion_s=_since(decided.get("promoted"), fault_at),
        write_downtime_s=_downtime(load, fault_at, landed),
        acknowledged=len(load.acks),
        failed_requests=len(load.failures),
        lost_writes=lost,
        demoted_acks=demoted,
        rejoined_s=rejoined_s,
        fault_at=fault_at,
        timeline=timeline(load, fault_at),
    )


def _downtime(load: Load, fault_at: float, landed: float) -> float | None:
    """None if writes never came back. Writes sent before the fault was surely in place (a
    kubectl command takes a while to land) may be acknowledged after ``fault_at``; only one
    sent after ``landed`` shows the cluster writable again."""
    if not any(sent > landed for _, sent, _ in load.acks):
        return None
    times = sorted(ack for _, _, ack in load.acks)
    start = max((t for t in times if t <= fault_at), default=fault_at)
    after = [t for t in times if t > start]
    if not after:
        return None
    return round(max(b - a for a, b in zip([start, *after], after, strict=False)), 3)


def _since(at: float | None, t0: float) -> float | None:
    return None if at is None else round(at - t0, 3)


def timeline(load: Load, t0: float, bucket_s: float = 0.5) -> list[tuple[float, int, int]]:
    """Acknowledged and failed requests per ``bucket_s``, relative to ``t0`` (the fault)."""
    buckets: dict[float, list[int]] = {}
    for _, _, ack in load.acks:
        buckets.setdefault(round((ack - t0) / bucket_s) * bucket_s, [0, 0])[0] += 1
    for t in load.failures:
        buckets.setdefault(round((t - t0) / bucket_s) * bucket_s, [0, 0])[1] += 1
    return [(t, ok, bad) for t, (ok, bad) in sorted(buckets.items())]


async def drill(target: Target, settings: Settings, fault: Fault, count: int) -> list[DrillResult]:
    results = []
    for _ in range(count):
        results.append(await drill_once(target, settings, fault))
        await asyncio.sleep(1.0)
    return results


def summary(results: list[DrillResult]) -> dict[str, Any]:
    downtimes = [r.write_downtime_s for r in results if r.write_downtime_s is not None]
    return {
        "drills": len(results),
        "downtime_median_s": round(statistics.median(downtimes), 3) if downtimes else None,
        "downtime_max_s": max(downtimes) if downtimes else None,
        "lost_writes": sum(r.lost_writes or 0 for r in results),
        "demoted_acks": sum(r.demoted_acks or 0 for r in results),
        "all_rejoined": all(r.rejoined_s is not None for r in results),
        "rejoin_max_s": max((r.rejoined_s or 0 for r in results), default=None),
        "writes_resumed": len(downtimes) == len(results),
        "writes_checked": all(r.lost_writes is not None for r in results),
    }


def passed(s: dict[str, Any]) -> bool:
    """What a drill must show: writes came back, every acknowledged one was found on the new
    primary, none by a demoted primary, the old primary is a replica again."""
    return bool(
        s["writes_resumed"] and s["writes_checked"] and s["lost_writes"] == 0
        and s["demoted_acks"] == 0 and s["all_rejoined"]
    )  # fmt: skip


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
            f"{r.acknowledged:>6} {r.failed_requests:>6} {_n(r.lost_writes):>4} "
            f"{_n(r.demoted_acks):>7} {_fmt(r.rejoined_s):>7}"
        )
    s = summary(results)
    lines.append(
        f"\nwrite downtime median {_fmt(s['downtime_median_s'])}, max {_fmt(s['downtime_max_s'])}"
        f" (goal: median <= 3 s, max <= 5 s); lost acknowledged writes {s['lost_writes']}; "
        f"acknowledged by a demoted primary {s['demoted_acks']}; all rejoined: {s['all_rejoined']}"
    )
    if not s["writes_resumed"]:
        lines.append("FAILED: in some drill no write sent after the fault was acknowledged")
    if not s["writes_checked"]:
        lines.append("FAILED: in some drill no member answered as primary: writes not checked")
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
