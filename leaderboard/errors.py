"""Errors that reach a client, with the HTTP status and code of the contract (DESIGN.md)."""

from __future__ import annotations

import orjson


class AppError(Exception):
    """An error the client is told about: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> bytes:
    """The error format of the contract, serialised."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def invalid_request(message: str) -> AppError:
    return AppError(400, "invalid_request", message)


def unavailable(what: str, retry_after_s: int = 1) -> AppError:
    return AppError(
        503,
        "unavailable",
        f"{what} is unavailable; retry shortly",
        {"Retry-After": str(retry_after_s)},
    )


def payload_too_large(limit: int) -> AppError:
    return AppError(413, "payload_too_large", f"the request body exceeds {limit} bytes")
