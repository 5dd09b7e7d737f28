"""GET /api/leaderboards, /api/leaderboards/{board}, /api/leaderboards/{board}/users?ids= and
/api/leaderboards/{board}/users/{userId}.

Every board alike, the all-time one included (``all-time``: the same standings as
``/api/leaderboard``). Pages are keyset-paginated: the cursor holds the season and the last
entry's (score, tie-break, rank), so paging through a season never repeats or skips an entry
that did not move meanwhile, and a cursor taken in a season keeps reading that season after a
reset (it is archived by then).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

import leaderboard.api.routes.path_convertors  # noqa: F401 - registers the {userId:userid} convertor
from leaderboard.api.deps import ServicesDep
from leaderboard.api.schemas import (
    BoardPage,
    BoardsResponse,
    BoardUserResponse,
    BoardUsersResponse,
    errors,
)
from leaderboard.api.services import Services
from leaderboard.boards import Season
from leaderboard.errors import AppError
from leaderboard.reads import MAX_USERS

router = APIRouter()

MAX_LIMIT = 100
# A request line percent-encodes a character in up to 12 bytes, and the HTTP parser refuses a
# request head over 80 KiB with a plain-text 400 before the app sees it: 5,000 characters stay
# under that whatever they are (100 ids of 49 characters).
MAX_IDS_CHARS = 5000


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _board(svc: Services, board: str) -> str:
    if board not in svc.catalog.boards:
        raise AppError(404, "unknown_board", f"there is no board {board!r}")
    return board


async def _season(svc: Services, board: str, number: int | None) -> Season:
    found = await svc.leaderboard.reads.season(board, number)
    if found is None:
        if number is None:
            raise AppError(503, "unavailable", f"the current season of {board!r} is not known")
        raise AppError(404, "unknown_season", f"board {board!r} has no season {number}")
    if found.starts_at is not None and found.starts_at > datetime.now(UTC):
        # Written ahead, not started: there is nothing to read yet.
        raise AppError(404, "unknown_season", f"season {number} of {board!r} has not started")
    return found


def _encode_cursor(season: int, position: tuple[int, int, int]) -> str:
    raw = orjson.dumps([season, *position])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[int, tuple[int, int, int]]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        season, score, seq, rank = values
        if not all(type(v) is int and 0 <= v < 2**63 for v in values):
            raise ValueError(values)
        if not 1 <= season < 2**31:  # a season number is an SQL integer
            raise ValueError(season)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise AppError(400, "invalid_request", "cursor: not a cursor this API gave") from None
    return season, (score, seq, rank)


@router.get("/api/leaderboards", response_model=BoardsResponse)
async def boards(svc: ServicesDep) -> Response:
    """Every board, with its current season: ``season`` (its number), ``startsAt`` and
    ``endsAt`` (ISO 8601; null: open-ended)."""
    listed = []
    for board in svc.catalog.boards.values():
        season = svc.leaderboard.seasons.current(board.id)
        span = (
            {"season": None, "startsAt": None, "endsAt": None}
            if season is None
            else season.public()
        )
        listed.append({**board.public(), **span})
    return _json({"boards": listed})


@router.get("/api/leaderboards/{board}", response_model=BoardPage, responses=errors(400, 404, 503))
async def board_page(
    svc: ServicesDep,
    board: str,
    season: int | None = Query(None, ge=1, le=2**31 - 1, description="default: the current one"),
    limit: int = Query(10, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=200, description="`nextCursor` of a page"),
) -> Response:
    """A page of a board's season ranking: the top 10 of the current season by default,
    ``?season=N`` for an archived one, ``?limit=&cursor=`` to page through all of it. Ties:
    who reached the score first ranks higher."""
    board = _board(svc, board)
    after = None
    if cursor is not None:
        cursor_season, after = _decode_cursor(cursor)
        if season is not None and season != cursor_season:
            raise AppError(400, "invalid_request", "cursor: it belongs to another season")
        season = cursor_season
    if season is not None:
        await _season(svc, board, season)  # 404 for a season that never was
    page = await svc.leaderboard.reads.page(board, season, after, limit)
    span = await _season(svc, board, page.season)
    next_cursor = None
    if len(page.entries) == limit:
        position = await svc.leaderboard.reads.keyset(board, page.season, page.entries[-1])
        next_cursor = _encode_cursor(page.season, position)
    return _json(
        {
            "board": board,
            **span.public(),
            "top": page.entries,
            "nextCursor": next_cursor,
            "total": page.total,
        }
    )


def _user_ids(ids: str) -> list[str]:
    listed = list(dict.fromkeys(i for i in ids.split(",") if i))  # in order, once each
    if not listed:
        raise AppError(400, "invalid_request", "ids: name at least one user")
    if len(listed) > MAX_USERS:
        raise AppError(400, "invalid_request", f"ids: at most {MAX_USERS} users")
    if any(len(i) > 128 for i in listed):
        raise AppError(400, "invalid_request", "ids: a user id is at most 128 characters")
    return listed


@router.get(
    "/api/leaderboards/{board}/users",
    response_model=BoardUsersResponse,
    responses=errors(400, 404, 503),
)
async def board_users(
    svc: ServicesDep,
    board: str,
    ids: str = Query(
        max_length=MAX_IDS_CHARS,
        description=f"comma-separated user ids, up to {MAX_USERS} (a friends list)",
    ),
    season: int | None = Query(None, ge=1, le=2**31 - 1, description="default: the current one"),
) -> Response:
    """The given users ranked together (a friends list), each with their rank on the whole
    season: one Redis round trip for the current season. Users without a score are left
    out."""
    board = _board(svc, board)
    wanted = _user_ids(ids)
    if season is not None:
        await _season(svc, board, season)
    page = await svc.leaderboard.reads.users(wanted, board, season)
    span = await _season(svc, board, page.season)
    return _json({"board": board, **span.public(), "users": page.entries, "total": page.total})


@router.get(
    "/api/leaderboards/{board}/users/{userId:userid}",
    response_model=BoardUserResponse,
    responses=errors(400, 404, 503),
)
async def board_user(
    svc: ServicesDep,
    board: str,
    userId: str = Path(min_length=1, max_length=128),
    season: int | None = Query(None, ge=1, le=2**31 - 1, description="default: the current one"),
) -> Response:
    """A user's score, rank and neighbours on a board's season (404 `unknown_user`: no score
    in that season)."""
    board = _board(svc, board)
    if season is not None:
        await _season(svc, board, season)
    view = await svc.leaderboard.reads.user(userId, board, season)
    span = await _season(svc, board, view.season)
    return _json(
        {
            "board": board,
            **span.public(),
            "userId": view.user_id,
            "score": view.score,
            "rank": view.rank,
            "around": view.around,
            "percentile": view.percentile,
        }
    )
