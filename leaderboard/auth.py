"""JWT: minting dev tokens and verifying bearer tokens (RFC 8725 rules).

The accepted algorithm comes from configuration only, never from the token header, so ``none``
and algorithm-confusion tokens fail like any bad signature. ``exp`` and ``sub`` are required.
"""

from __future__ import annotations

import time
from typing import Literal

import jwt

from leaderboard import devsecrets
from leaderboard.config import Settings

ErrorCode = Literal["invalid_token", "token_expired"]


class TokenError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def hs256_secret(settings: Settings) -> str:
    """The HS256 secret: configured, or (dev only) the key generated into the run folder."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.env != "dev":  # Settings already refuses this; keep the invariant local too
        raise RuntimeError("no JWT secret configured")
    return devsecrets.read_or_create(devsecrets.jwt_key_path(settings.run_path))


def mint(settings: Settings, user_id: str, *, ttl: float = 3600.0) -> str:
    """Sign a token for ``user_id`` with the HS256 key (the local dev key by default)."""
    if settings.jwt_algorithm != "HS256":
        raise RuntimeError(
            f"cannot mint {settings.jwt_algorithm} tokens: only the issuer holds the private key"
        )
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")
