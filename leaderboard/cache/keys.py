"""Redis key names (DESIGN.md): one place, one optional prefix for all of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from leaderboard.boards import ALL_TIME


class Script(Protocol):
    """A Lua script bound to a connection: redis-py's ``AsyncScript`` or a ``PipeScript``."""

    def __call__(self, keys: Sequence[Any] = ..., args: Sequence[Any] = ...) -> Awaitable[Any]: ...


ScriptFactory = Callable[[str], Script]


@dataclass(frozen=True)
class BoardKeys:
    """One board's keys: the same four for every board (one mechanism)."""

    scores: str  # sorted set of the current season
    top10: str  # hash: members, seq, message, ranking, season
    updates: str  # pub/sub channel
    rebuild_lock: str


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    @property
    def scores(self) -> str:
        """Sorted set: member = user id, score = encoded (points, tie-break)."""
        return f"{self.prefix}leaderboard:scores"

    @property
    def top10(self) -> str:
        """Hash: ``members`` (last published membership), ``seq``, ``message`` (last published
        message), ``ranking`` (= ``ready`` once the sorted set holds every user), ``season``
        (the season the sorted set holds), ``epoch`` (its generation: cache.generation)."""
        return f"{self.prefix}leaderboard:top10"

    @property
    def updates(self) -> str:
        """Pub/sub channel of top-10 membership changes."""
        return f"{self.prefix}leaderboard:updates"

    @property
    def rebuild_lock(self) -> str:
        return f"{self.prefix}leaderboard:rebuild-lock"

    @property
    def blocked(self) -> str:
        """Set: SHA-1 hashes of banned and erased user ids, which no ranking update adds back
        (hashes, so that the key names nobody)."""
        return f"{self.prefix}leaderboard:blocked"

    @property
    def reconciled(self) -> str:
        """String: the id of the last completion the reconciliation checked."""
        return f"{self.prefix}leaderboard:reconciled"

    @property
    def reconciled_adjustments(self) -> str:
        """String: the id of the last admin adjustment the reconciliation checked."""
        return f"{self.prefix}leaderboard:reconciled-adjustments"

    @property
    def reconciled_moderation(self) -> str:
        """String: the id of the last ban or unban (``admin_audit``) the reconciliation
        checked."""
        return f"{self.prefix}leaderboard:reconciled-moderation"

    @property
    def reconcile_lock(self) -> str:
        return f"{self.prefix}leaderboard:reconcile-lock"

    def board(self, board_id: str) -> BoardKeys:
        """The all-time board keeps the documented names; every other board
        ``leaderboard:board:{id}:...``."""
        if board_id == ALL_TIME:
            return BoardKeys(self.scores, self.top10, self.updates, self.rebuild_lock)
        base = f"{self.prefix}leaderboard:board:{board_id}:"
        return BoardKeys(f"{base}scores", f"{base}top10", f"{base}updates", f"{base}rebuild-lock")

    def ratelimit(self, user_id: str) -> str:
        return f"{self.prefix}ratelimit:{user_id}"
