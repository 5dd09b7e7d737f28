"""What a board holds and shows, whichever store it comes from (PostgreSQL's tables or the
Redis ranking): a user's standing on one board's season, an entry of a page, a user's view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict


@dataclass(frozen=True)
class Standing:
    """A user's score on one board's season and when it was reached (the tie-break): what an
    award returns per board, and what a ranking update writes."""

    board: str
    season: int
    score: int
    reached_seq: int


class Entry(TypedDict):
    rank: int
    userId: str
    score: int


@dataclass(frozen=True)
class UserView:
    user_id: str
    score: int
    rank: int
    around: list[Entry]
    season: int
    total: int  # how many users the season ranks

    @property
    def percentile(self) -> float:
        """The share of the season's ranked users at or below this user, in percent: 100 for
        the first, 100/total for the last (ranks are unique: ties go to who reached the score
        first)."""
        return 100 * (self.total - self.rank + 1) / self.total
