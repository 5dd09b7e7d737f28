"""Request and response shapes of the HTTP API (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class CompleteActionRequest(BaseModel):
    # Unknown fields are ignored: whatever a client says about points has no effect.
    model_config = ConfigDict(extra="ignore")

    actionId: StrictStr = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


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


class CatalogResponse(BaseModel):
    actions: list[ActionInfo]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}
