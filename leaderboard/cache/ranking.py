"""The ranking in Redis: one sorted set, one atomic update-compare-publish script.

Ties: who reached a score first ranks higher. PostgreSQL orders by ``(score DESC, reached_seq
ASC)``; Redis gets the same order by packing both into the sorted-set score, a double::

    composite = score * 2**SEQ_BITS + (2**SEQ_BITS - 1 - reached_seq)

A double holds integers exactly up to 2**53, so the order is exact while ``score < 2**20``
(1,048,576 points; the catalog bounds a user's score by the sum of its actions) and
``reached_seq < 2**33`` (8.6 billion score changes). :func:`encode` refuses values outside that
range rather than ranking them wrongly.

Top-10 change detection is a single Lua script (atomic in Redis): update the user's entry, read
the top 10, compare its membership (the set of user ids, not their scores or order) with the
last published one and, only if it changed, bump ``seq``, store and publish the new message.
Concurrent completions therefore give no missed and no duplicate broadcasts. Most completions
cannot change the membership (only a user entering or leaving the top 10 changes it): when the
ranking is complete and its top 10 published, the script compares the user's rank before and
after instead of reading and comparing the top 10.

Every write of an entry (a completion's record, a rebuild's batch, the repairs, an admin's
adjustment) keeps the newest standing: the one with the higher ``reached_seq``, which
PostgreSQL takes while the row is locked, so that it follows commit order per user and board.
Scores may then go down (an adjustment taking points back) and a standing read or recorded late
never overwrites a newer one (``ranking_scripts.PUT``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from leaderboard.boards import ALL_TIME
from leaderboard.cache import ranking_scripts
from leaderboard.cache.generation import Generations
from leaderboard.cache.keys import Keys, ScriptFactory
from leaderboard.cache.lock import Lease
from leaderboard.standings import Entry, Standing, UserView

SCORE_BITS = 20
SEQ_BITS = 33
SEQ_UNIT = 1 << SEQ_BITS
MAX_SCORE = (1 << SCORE_BITS) - 1
MAX_SEQ = SEQ_UNIT - 1
TOP_N = 10


Rebuilt = Literal["done", "elsewhere", "superseded"]


class RankingRangeError(ValueError):
    pass


def encode(score: int, reached_seq: int) -> int:
    if not 0 <= score <= MAX_SCORE or not 0 <= reached_seq <= MAX_SEQ:
        raise RankingRangeError(f"score {score} / reached_seq {reached_seq} out of exact range")
    return score * SEQ_UNIT + (MAX_SEQ - reached_seq)


def decode(composite: bytes | str | float) -> int:
    return int(float(composite)) >> SEQ_BITS


def reached_seq(composite: bytes | str | float) -> int:
    return MAX_SEQ - (int(float(composite)) & MAX_SEQ)


@dataclass(frozen=True)
class Recorded:
    rank: int | None  # 1-based, on the first board updated
    published_seq: int | None  # the seq of the first board's broadcast this caused, if any
    ranking_ready: bool  # the first board's
    # Per board updated: (board, published seq or None, ranking ready).
    boards: tuple[tuple[str, int | None, bool], ...] = ()


@dataclass(frozen=True)
class Page:
    season: int
    entries: list[Entry]
    total: int  # how many users the season ranks


NOT_READY = object()


def _entries(flat: list[Any], first_rank: int) -> list[Entry]:
    return [
        {"rank": first_rank + i // 2, "userId": _text(flat[i]), "score": decode(flat[i + 1])}
        for i in range(0, len(flat), 2)
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Ranking:
    """``client`` (redis-py) serves the rare operations; ``scripts`` makes the hot-path
    scripts (by default redis-py's, in the API a :class:`~leaderboard.cache.pipe.RedisPipe`).
    Every board's ranking is the same keys (:meth:`Keys.board`) and the same scripts."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, scripts: ScriptFactory | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        make = scripts or client.register_script
        self._update = make(ranking_scripts.UPDATE)
        self._moderate_script = client.register_script(ranking_scripts.MODERATE)
        self._load = client.register_script(ranking_scripts.LOAD)
        self._top = make(ranking_scripts.TOP)
        self._user = make(ranking_scripts.USER)
        self._users = make(ranking_scripts.USERS)
        self.generations = Generations(client)

    async def record(self, user_id: str, updates: list[Standing]) -> Recorded:
        """Record the user's new score on each board (the first one's rank is returned)."""
        keys: list[str] = []
        args: list[str | int] = [user_id, SEQ_UNIT]
        for u in updates:
            board = self.keys.board(u.board)
            keys += [board.scores, board.top10]
            args += [board.updates, encode(u.score, u.reached_seq), u.season, u.board]
        keys.append(self.keys.blocked)
        return _recorded(await self._update(keys=keys, args=args), [u.board for u in updates])

    async def block(self, user_id: str, boards: list[str]) -> dict[str, int]:
        """Remove the user from every board's ranking, and keep them out (a ban, an erasure);
        per board, the seq of the broadcast this caused (0: none)."""
        return await self._moderate(user_id, "block", [(b, None) for b in boards])

    async def set_standings(
        self, user_id: str, standings: list[Standing], boards: list[str]
    ) -> dict[str, int]:
        """Let the user back in and give them exactly these standings (an unban, an
        adjustment: unlike a completion's record, a score may go down)."""
        given = {s.board: s for s in standings}
        return await self._moderate(user_id, "set", [(b, given.get(b)) for b in boards])

    async def _moderate(
        self, user_id: str, mode: str, boards: list[tuple[str, Standing | None]]
    ) -> dict[str, int]:
        keys: list[str] = []
        args: list[str | int] = [user_id, SEQ_UNIT, mode]
        for board_id, standing in boards:
            board = self.keys.board(board_id)
            keys += [board.scores, board.top10]
            composite = "" if standing is None else encode(standing.score, standing.reached_seq)
            season = 0 if standing is None else standing.season
            args += [board.updates, composite, season, board_id]
        keys.append(self.keys.blocked)
        reply = await self._moderate_script(keys=keys, args=args)
        return {board_id: int(seq) for (board_id, _), seq in zip(boards, reply, strict=True)}

    async def publish_if_changed(self, board_id: str = ALL_TIME, season: int = 1) -> int | None:
        """Publish the board's top 10 if its membership changed (or ``season`` starts)."""
        board = self.keys.board(board_id)
        reply = await self._update(
            keys=[board.scores, board.top10, self.keys.blocked],
            args=["", SEQ_UNIT, board.updates, 0, season, board_id],
        )
        return _recorded(reply, [board_id]).published_seq

    async def top(self, board_id: str = ALL_TIME) -> list[Entry] | None:
        """The top 10, or None if the ranking is not (yet) complete in Redis."""
        page = await self.page(board_id, 0, TOP_N)
        return None if page is None else page.entries

    async def page(self, board_id: str, offset: int, limit: int) -> Page | None:
        """Ranks ``offset + 1`` to ``offset + limit`` of the season Redis holds, or None if the
        ranking is not (yet) complete in Redis."""
        board = self.keys.board(board_id)
        reply = await self._top(keys=[board.scores, board.top10], args=[offset, offset + limit - 1])
        if not int(reply[0]):
            return None
        return Page(int(reply[1]), _entries(reply[2], offset + 1), int(reply[3]))

    async def user(
        self, user_id: str, radius: int, board_id: str = ALL_TIME
    ) -> UserView | object | None:
        """The user's rank and neighbours; None if unknown; NOT_READY if Redis cannot tell."""
        board = self.keys.board(board_id)
        reply = await self._user(keys=[board.scores, board.top10], args=[user_id, radius])
        if not int(reply[0]):
            return NOT_READY
        if len(reply) == 2:
            return None
        season, rank0, first0, flat = int(reply[1]), int(reply[2]), int(reply[3]), reply[4]
        around = _entries(flat, first0 + 1)
        me = around[rank0 - first0]
        return UserView(user_id, me["score"], rank0 + 1, around, season, int(reply[5]))

    async def users(self, user_ids: list[str], board_id: str = ALL_TIME) -> Page | None:
        """The ranked ones of ``user_ids`` with their ranks on the whole board, best first (one
        script: one round trip); None if the ranking is not (yet) complete in Redis."""
        board = self.keys.board(board_id)
        reply = await self._users(keys=[board.scores, board.top10], args=user_ids)
        if not int(reply[0]):
            return None
        flat = reply[3]
        entries: list[Entry] = [
            {"rank": int(flat[i + 1]) + 1, "userId": _text(flat[i]), "score": decode(flat[i + 2])}
            for i in range(0, len(flat), 3)
        ]
        entries.sort(key=lambda e: e["rank"])
        return Page(int(reply[1]), entries, int(reply[2]))

    async def is_ready(self, board_id: str) -> bool:
        return await self.client.hget(self.keys.board(board_id).top10, "ranking") == b"ready"

    async def rebuild(
        self,
        board_id: str,
        season: int,
        batches: Callable[[], AsyncIterator[list[tuple[str, int, int]]]],
        *,
        lock_ttl_s: float = 15.0,
        attempts: int = 5,
    ) -> Rebuilt:
        """Reload a board's season from PostgreSQL (``batches()`` reads it afresh each time);
        ``elsewhere`` if another process is at it, ``superseded`` if the ranking went on to a
        later generation or season ``attempts`` times while this one read (the caller tries
        again later).

        Concurrent completions keep writing while this runs; the newest standing wins
        whichever lands last, and a user banned since the batch was read is left out. Reads go
        to PostgreSQL until the
        final ``ranking = ready`` flag is set. The lock is renewed while the rebuild makes
        progress, so a process that dies holding it delays the next rebuild by ``lock_ttl_s``
        at most.
        """
        board = self.keys.board(board_id)
        lease = Lease(self.client, board.rebuild_lock, lock_ttl_s)
        if not await lease.acquire():
            return "elsewhere"
        try:
            for _ in range(attempts):
                await self.publish_if_changed(board_id, season)  # the hash now holds this season
                epoch = await self.generations.begin(board)
                async for batch in batches():
                    if batch:
                        await self._load(
                            keys=[board.scores, self.keys.blocked],
                            args=[SEQ_UNIT]
                            + [v for u, sc, sq in batch for v in (u, encode(sc, sq))],
                        )
                    await lease.renew()
                ended = await self.generations.complete(board, season, epoch)
                if ended < 0:
                    return "superseded"  # another season: the caller asks which one is current
                if ended:
                    await self.publish_if_changed(board_id, season)
                    return "done"
            return "superseded"
        finally:
            await lease.release()

    async def invalidate(self, board_id: str = ALL_TIME) -> None:
        """Mark the ranking incomplete, in a new generation: reads fall back to PostgreSQL
        until a rebuild that begins after this call ends (one under way cannot mark it
        complete)."""
        await self.generations.invalidate(self.keys.board(board_id))


def _recorded(reply: list[Any], boards: list[str]) -> Recorded:
    rank = reply[0]
    per_board = tuple(
        (board, int(reply[1 + 2 * i]) or None, bool(int(reply[2 + 2 * i])))
        for i, board in enumerate(boards)
    )
    return Recorded(
        rank=None if rank is None else int(rank) + 1,
        published_seq=per_board[0][1],
        ranking_ready=per_board[0][2],
        boards=per_board,
    )
