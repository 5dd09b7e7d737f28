"""The chaos campaign's moderator: admin actions interleaved with the same users' completions,
under the campaign's faults, and the rules the history check holds them to
(:func:`violations`).

Each episode takes a fresh user and, through the API as a game's backend and its live-ops team
would (a ``server`` token completing for the user, an ``admin`` token): completions racing a
ban, a completion after the ban, sometimes an unban and another completion, an adjustment
(points taken back or given), sometimes an erasure and a completion after it. Bans, unbans and
erasures are repeatable (a 503 says to repeat), so each is repeated until answered; an
adjustment is not, so one whose answer was lost may or may not have happened.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from leaderboard import auth
from leaderboard.config import Settings

# Every (table, column) that names a user: an erasure leaves none of them naming the user.
NAMING = (
    ("completions", "user_id"),
    ("scores", "user_id"),
    ("board_scores", "user_id"),
    ("bans", "user_id"),
    ("adjustments", "user_id"),
    ("admin_audit", "subject"),
)
REPEAT_FOR_S = 30.0  # how long a repeatable action is repeated before the episode gives up


@dataclass
class Step:
    what: str  # "complete", "ban", "unban", "adjust", "erase"
    sent: float
    answered: float | None = None  # None: no answer (error, timeout)
    status: int | None = None
    action: str = ""  # a completion's action
    points: int = 0  # an adjustment's

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def unknown(self) -> bool:
        """Whether it may have happened without saying so (no answer, or a 5xx)."""
        return self.status is None or self.status >= 500


@dataclass
class Episode:
    user: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class Held:
    """What the final primary and Redis hold about the episodes' users."""

    completions: dict[str, set[str]]  # user -> action ids
    completion_points: dict[str, int]
    adjustments: dict[str, list[int]]  # user -> points of each row
    scores: dict[str, tuple[int, bool]]  # user -> (all-time score, banned)
    naming: set[str]  # users some row still names
    ranked: set[str]  # users on some Redis ranking


def _closed_windows(episode: Episode, start: str, end: str) -> list[tuple[float, float]]:
    """Windows from an acknowledged ``start`` action to the sending of the next ``end`` one
    (forever if none): when the user's completions must be refused."""
    windows = []
    for i, step in enumerate(episode.steps):
        if step.what == start and step.ok and step.answered is not None:
            closes = next((s.sent for s in episode.steps[i + 1 :] if s.what == end), float("inf"))
            windows.append((step.answered, closes))
    return windows


def violations(episodes: Sequence[Episode], held: Held) -> list[str]:
    """The rules: an acknowledged completion is kept (unless the user was erased); none is
    acknowledged while a ban or an erasure is in force; every acknowledged adjustment is one
    row, none is two; a score is its completions plus its adjustments; the last ban or unban
    decides whether the user is ranked; an erased user is named by no row and no ranking."""
    found: list[str] = []
    for ep in episodes:
        u, steps = ep.user, ep.steps
        erased = any(s.what == "erase" and s.ok for s in steps)
        uncertain = any(s.unknown for s in steps if s.what in ("ban", "unban", "erase"))
        refused = _closed_windows(ep, "ban", "unban") + _closed_windows(ep, "erase", "")
        for s in steps:
            if s.what != "complete" or not s.ok:
                continue
            if any(a < s.sent < b for a, b in refused):
                found.append(f"VIOLATION: {u}: {s.action} acknowledged while banned or erased")
            if not erased and s.action not in held.completions.get(u, set()):
                found.append(f"VIOLATION: {u}: acknowledged {s.action} is not in completions")
        if erased:
            if u in held.naming or u in held.ranked:
                found.append(f"VIOLATION: {u}: erased, but still named by a row or a ranking")
            continue
        if uncertain:
            continue  # a ban, unban or erasure that never answered: its state is unknown
        adjust = [s for s in steps if s.what == "adjust"]
        rows = sorted(held.adjustments.get(u, []))
        sure = sorted(s.points for s in adjust if s.ok)
        maybe = [s.points for s in adjust if s.unknown]
        if not _is_sure_plus_some_maybe(rows, sure, maybe):
            found.append(f"VIOLATION: {u}: adjustments acknowledged {sure}, rows {rows}")
        score, banned = held.scores.get(u, (0, False))
        expected = held.completion_points.get(u, 0) + sum(rows)
        if score != expected:
            found.append(f"VIOLATION: {u}: score {score}, completions and adjustments {expected}")
        last = [s for s in steps if s.what in ("ban", "unban") and s.ok]
        if last:
            should_ban = last[-1].what == "ban"
            # Unbanned, a user with a score row is ranked (a ban adds one at 0 if none).
            should_rank = not should_ban and u in held.scores
            if banned != should_ban or (u in held.ranked) != should_rank:
                found.append(
                    f"VIOLATION: {u}: last {last[-1].what} acknowledged, but banned={banned},"
                    f" ranked={u in held.ranked}"
                )
    return found


def _is_sure_plus_some_maybe(rows: list[int], sure: list[int], maybe: list[int]) -> bool:
    left = list(rows)
    for points in sure:
        if points not in left:
            return False
        left.remove(points)
    for points in left:
        if points not in maybe:
            return False
        maybe.remove(points)
    return True


def summary(episodes: Sequence[Episode]) -> dict[str, int]:
    counts = {"episodes": len(episodes)}
    for ep in episodes:
        for s in ep.steps:
            key = f"{s.what}_{'ok' if s.ok else 'refused' if not s.unknown else 'unknown'}"
            counts[key] = counts.get(key, 0) + 1
    return counts


class Moderator:
    """Runs episodes one after another until stopped (``async with``)."""

    def __init__(
        self,
        api_url: str,
        settings: Settings,
        actions: Sequence[tuple[str, dict[str, Any]]],
        seed: int,
    ) -> None:
        self.api_url = api_url
        self.actions = list(actions)
        self.episodes: list[Episode] = []
        self._rng = random.Random(seed)  # noqa: S311 - a schedule, not a secret
        self._admin = auth.mint(settings, "chaos-moderator", ttl=7200, scope="admin")
        self._server = auth.mint(settings, "chaos-backend", ttl=7200, scope="server")
        self._run = uuid.uuid4().hex[:8]
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> Moderator:
        self._client = httpx.AsyncClient(base_url=self.api_url, timeout=5.0)
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """The episode under way ends first, as a live-ops team finishes what it started
        (a ban repeated until answered): cut mid-way, it left a half-done erasure behind,
        which only its repeat completes."""
        assert self._task is not None
        self._stopping = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), REPEAT_FOR_S + 10)
        except TimeoutError:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def _loop(self) -> None:
        n = 0
        while not self._stopping:
            n += 1
            episode = Episode(f"mod-{self._run}-{n}")
            self.episodes.append(episode)
            await self._episode(episode)
            await asyncio.sleep(self._rng.uniform(0.2, 0.6))

    async def _episode(self, ep: Episode) -> None:
        actions = self._rng.sample(self.actions, 5)
        delay = self._rng.uniform(0.0, 0.05)

        async def ban_soon() -> bool:
            await asyncio.sleep(delay)
            return await self._repeat(ep, "ban", "POST", "/ban", {"reason": "chaos"})

        racing = await asyncio.gather(
            self._complete(ep, actions[0]), self._complete(ep, actions[1]), ban_soon()
        )
        if not racing[-1]:
            return
        await self._complete(ep, actions[2])
        if self._rng.random() < 0.7:
            if not await self._repeat(ep, "unban", "DELETE", "/ban", {"reason": "appeal"}):
                return
            await self._complete(ep, actions[3])
        points = self._rng.choice([-10, -5, 7])
        await self._call(ep, Step("adjust", time.time(), points=points), "POST", "/adjustments",
                         {"points": points, "reason": "chaos"})  # fmt: skip
        if self._rng.random() < 0.3 and await self._repeat(ep, "erase", "DELETE", "", None):
            await self._complete(ep, actions[4])

    async def _complete(self, ep: Episode, action: tuple[str, dict[str, Any]]) -> None:
        step = Step("complete", time.time(), action=action[0])
        ep.steps.append(step)
        try:
            response = await self._client.post(
                "/api/action/complete",
                json={"actionId": action[0], "data": action[1], "userId": ep.user},
                headers={"Authorization": f"Bearer {self._server}"},
            )
            step.status = response.status_code
        except httpx.HTTPError:
            pass
        step.answered = time.time()

    async def _repeat(
        self, ep: Episode, what: str, method: str, path: str, body: dict[str, Any] | None
    ) -> bool:
        """A repeatable action, repeated until answered with a 2xx or a 4xx."""
        deadline = time.monotonic() + REPEAT_FOR_S
        while True:
            step = Step(what, time.time())
            await self._call(ep, step, method, path, body)
            if not step.unknown or time.monotonic() > deadline:
                return step.ok
            await asyncio.sleep(0.2)

    async def _call(
        self, ep: Episode, step: Step, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        ep.steps.append(step)
        try:
            response = await self._client.request(
                method,
                f"/api/admin/users/{ep.user}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self._admin}"},
            )
            step.status = response.status_code
        except httpx.HTTPError:
            pass
        step.answered = time.time()


async def held(conn: asyncpg.Connection, ranked: set[str], users: list[str]) -> Held:
    """Read what the final primary holds about ``users`` (``ranked``: those on some Redis
    ranking, read by the caller)."""
    completions: dict[str, set[str]] = {}
    points: dict[str, int] = {}
    for r in await conn.fetch(
        "SELECT user_id, action_id, points FROM completions WHERE user_id = ANY($1::text[])",
        users,
    ):
        completions.setdefault(r["user_id"], set()).add(r["action_id"])
        points[r["user_id"]] = points.get(r["user_id"], 0) + r["points"]
    adjustments: dict[str, list[int]] = {}
    for r in await conn.fetch(
        "SELECT user_id, points FROM adjustments WHERE user_id = ANY($1::text[])"
        " AND board_id IS NULL",
        users,
    ):
        adjustments.setdefault(r["user_id"], []).append(r["points"])
    scores = {
        r["user_id"]: (r["score"], r["banned"])
        for r in await conn.fetch(
            "SELECT user_id, score, banned FROM scores WHERE user_id = ANY($1::text[])", users
        )
    }
    naming: set[str] = set()
    for table, column in NAMING:
        rows = await conn.fetch(
            f"SELECT DISTINCT {column} AS u FROM {table} WHERE {column} = ANY($1::text[])",  # noqa: S608
            users,
        )
        naming |= {r["u"] for r in rows}
    return Held(completions, points, adjustments, scores, naming, ranked & set(users))
