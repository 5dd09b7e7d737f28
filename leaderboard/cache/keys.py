"""Redis key names (DESIGN.md): one place, one optional prefix for all of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Script(Protocol):
    """A Lua script bound to a connection: redis-py's ``AsyncScript`` or a ``PipeScript``."""

    def __call__(self, keys: Sequence[Any] = ..., args: Sequence[Any] = ...) -> Awaitable[Any]: ...


ScriptFactory = Callable[[str], Script]


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
        message), ``ranking`` (= ``ready`` once the sorted set holds every user)."""
        return f"{self.prefix}leaderboard:top10"

    @property
    def updates(self) -> str:
        """Pub/sub channel of top-10 membership changes."""
        return f"{self.prefix}leaderboard:updates"

    @property
    def rebuild_lock(self) -> str:
        return f"{self.prefix}leaderboard:rebuild-lock"

    def ratelimit(self, user_id: str) -> str:
        return f"{self.prefix}ratelimit:{user_id}"
