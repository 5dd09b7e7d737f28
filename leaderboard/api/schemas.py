"""Request and response shapes of the HTTP API (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class CompleteActionRequest(BaseModel):
    # Unknown fields are ignored: whatever a client says about points has no effect.
    model_config = ConfigDict(extra="ignore")

    actionId: StrictStr = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    userId: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="With a `server`-scoped token: the user the action is completed for.",
    )


class CompleteActionResponse(BaseModel):
    userId: str
    actionId: str
    pointsAwarded: int
    score: int
    rank: int | None = Field(description="1-based; null when the ranking cannot tell right now")


class Entry(BaseModel):
    rank: int
    userId: str
    score: int


class TopResponse(BaseModel):
    top: list[Entry] = Field(max_length=10)


class UserResponse(BaseModel):
    userId: str
    score: int
    rank: int
    around: list[Entry]


class ActionInfo(BaseModel):
    id: str
    title: str
    description: str
    points: int
    data: dict[str, Any] | None = Field(description="JSON Schema of `data`; null: no data")
    repeat: str | int | dict[str, str] = Field(
        description="once, hourly, daily, weekly, a number of seconds, or {season: board}"
    )


class SeasonSpan(BaseModel):
    season: int = Field(description="the season's number (1, 2, ...)")
    startsAt: str | None = Field(description="ISO 8601; null: since the beginning")
    endsAt: str | None = Field(description="ISO 8601, exclusive; null: never ends")


class BoardInfo(SeasonSpan):
    id: str
    title: str
    actions: str | list[str] = Field(description='"all", or the action ids that count')
    reset: str = Field(description='"never", or a cron expression')
    timezone: str


class BoardsResponse(BaseModel):
    boards: list[BoardInfo]


class BoardPage(SeasonSpan):
    board: str
    top: list[Entry] = Field(description="the page: the top 10 by default")
    nextCursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
    total: int = Field(description="how many users the season ranks")


class BoardUserResponse(SeasonSpan):
    board: str
    userId: str
    score: int
    rank: int
    around: list[Entry]
    percentile: float = Field(
        description="the share of the season's ranked users at or below this one, in percent:"
        " 100 for the first, 100/total for the last"
    )


class BoardUsersResponse(SeasonSpan):
    board: str
    users: list[Entry] = Field(
        description="the ranked ones of the users asked for, best first, with their ranks on"
        " the whole season; a user without a score is left out"
    )
    total: int = Field(description="how many users the season ranks")


class CatalogResponse(BaseModel):
    actions: list[ActionInfo]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}
