"""JWT: minting dev tokens and verifying bearer tokens (RFC 8725 rules).

The accepted algorithm comes from configuration only, never from the token header, so ``none``
and algorithm-confusion tokens fail like any bad signature. ``exp`` and ``sub`` are required.
HS256 is verified by :mod:`leaderboard.hs256` (the hot path), RS256/ES256 by PyJWT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from leaderboard import devsecrets
from leaderboard.config import Settings
from leaderboard.hs256 import ErrorCode, HS256Verifier, TokenError

__all__ = [
    "ErrorCode", "Principal", "TokenError", "Verifier", "check_user_id", "hs256_secret",
    "hs256_secrets", "mint", "scopes_of",
]  # fmt: skip

log = logging.getLogger("leaderboard.auth")

# The scopes the API knows (the JWT ``scope`` claim, space-separated as in OAuth 2.0).
ADMIN = "admin"  # the admin API
SERVER = "server"  # a trusted backend completing actions for the user it names


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for: its ``sub`` and its scopes."""

    sub: str
    scopes: frozenset[str] = frozenset()
    expires: float = float("inf")  # its `exp` (a WebSocket is closed then)


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """The ``scope`` claim as a set; anything but a string grants nothing."""
    scope = claims.get("scope")
    return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def hs256_secrets(settings: Settings) -> list[str]:
    """The HS256 secrets, the signing one first: configured (several while one rotates out),
    or (dev only) the key generated into the run folder."""
    if settings.jwt_secrets:
        return settings.jwt_secrets
    if settings.env != "dev":  # Settings already refuses this; keep the invariant local too
        raise RuntimeError("no JWT secret configured")
    return [devsecrets.read_or_create(devsecrets.jwt_key_path(settings.run_path))]


def hs256_secret(settings: Settings) -> str:
    """The secret that signs (the first one)."""
    return hs256_secrets(settings)[0]


def mint(settings: Settings, user_id: str, *, ttl: float = 3600.0, scope: str = "") -> str:
    """Sign a token for ``user_id`` with the HS256 key (the local dev key by default), with
    the space-separated ``scope`` if any."""
    if settings.jwt_algorithm != "HS256":
        raise RuntimeError(
            f"cannot mint {settings.jwt_algorithm} tokens: only the issuer holds the private key"
        )
    if ttl > settings.jwt_max_lifetime_s:
        raise ValueError(
            f"a lifetime of {ttl:.0f} s is longer than the API accepts "
            f"(LEADERBOARD_JWT_MAX_LIFETIME_S={settings.jwt_max_lifetime_s:.0f})"
        )
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if scope.split():
        claims["scope"] = " ".join(scope.split())
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")


MAX_USER_ID = 128
# Far above any real token (a few hundred bytes to 2 KiB with many claims), far below the
# HTTP head limit: nothing larger is decoded, hashed or cached.
MAX_TOKEN_CHARS = 8192


class Verifier:
    """Verifies bearer tokens with the configured algorithm and key.

    HS256 uses the shared secrets (:class:`HS256Verifier`); RS256/ES256 use a PEM public key,
    or a JWKS URL through PyJWT's ``PyJWKClient`` (keys cached, refetched when a token names an
    unknown ``kid``, so the issuer can rotate keys). The JWKS fetch is blocking, so it runs in
    a thread.
    """

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_s
        self.max_lifetime = settings.jwt_max_lifetime_s
        self._key: Any = None
        self._hs256: HS256Verifier | None = None
        self._jwks: jwt.PyJWKClient | None = None
        if self.algorithm == "HS256":
            # During a rotation every configured secret verifies, tried in order.
            self._hs256 = HS256Verifier(
                hs256_secrets(settings),
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
            )
        elif settings.jwt_public_key:
            self._key = settings.jwt_public_key
        else:
            assert settings.jwt_jwks_url is not None
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=3,
                cooldown_duration=settings.jwt_jwks_cooldown_s,
            )
        self._options: jwt.types.Options = {"require": ["exp", "sub"]}
        # Tokens verified recently: a client sends the same token with each of its requests,
        # and verification is a quarter of the write path's CPU. An entry is trusted for at
        # most CACHE_TTL_S (so a key withdrawn from the JWKS stops working within that) and
        # never past the token's own expiry.
        self._verified: OrderedDict[str, tuple[str, float, frozenset[str], float]] = OrderedDict()

    CACHE_SIZE = 50_000
    CACHE_TTL_S = 60.0

    async def user_id(self, token: str) -> str:
        """The token's ``sub``; :class:`TokenError` for anything else."""
        return (await self.principal(token)).sub

    async def principal(self, token: str) -> Principal:
        """The token's ``sub`` and scopes; :class:`TokenError` for anything else."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid_token", "the token is too large")
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and now < cached[1]:
            return Principal(cached[0], cached[2], cached[3])
        key = self._key
        if self._jwks is not None:
            try:
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            except jwt.PyJWKClientError as exc:
                # The detail (the issuer's URL, its errors) is for the log, not the client.
                log.warning("JWKS: no signing key for a token: %s", exc)
                raise TokenError("invalid_token", "no usable signing key") from None
            except jwt.InvalidTokenError:
                raise TokenError("invalid_token", "malformed token") from None
        claims = self.claims(token, key)
        user: str = claims["sub"]
        scopes = scopes_of(claims)
        until = min(float(claims["exp"]) + self.leeway, now + self.CACHE_TTL_S)
        expires = float(claims["exp"])
        self._verified[token] = (user, until, scopes, expires)
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return Principal(user, scopes, expires)

    def decode(self, token: str) -> str:
        """The ``sub`` of a token verified with the configured key (no cache, no JWKS)."""
        sub: str = self.claims(token)["sub"]
        return sub

    def claims(self, token: str, key: Any = None) -> dict[str, Any]:
        """A token's verified claims (``key``: a public key other than the configured one;
        HS256 always uses the configured secrets)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid_token", "the token is too large")
        if self._hs256 is not None:
            claims = self._hs256.claims(token)
        else:
            claims = self.pyjwt_claims(token, self._key if key is None else key)
        check_user_id(claims["sub"])
        self.check_lifetime(claims)
        return claims

    def check_lifetime(self, claims: dict[str, Any]) -> None:
        """A token valid for years is a credential nobody can take back: ``exp`` (checked
        as a number by both verifiers) at most ``jwt_max_lifetime_s`` away."""
        if float(claims["exp"]) > time.time() + self.max_lifetime + self.leeway:
            raise TokenError("invalid_token", "the token's lifetime exceeds the allowed maximum")

    def pyjwt_claims(self, token: str, key: Any) -> dict[str, Any]:
        """PyJWT's verification (RS256/ES256; for HS256, the reference of the tests)."""
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "the token has expired") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(
                "invalid_token", f"the token is not signed with {self.algorithm}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("invalid_token", f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid_token", _reason(exc)) from None
        return claims


def check_user_id(sub: Any) -> None:
    """A token's ``sub`` must be a user id the API can store and show."""
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_USER_ID or not sub.isprintable():
        raise TokenError("invalid_token", "the token's 'sub' is not a valid user id")


def _reason(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    return "malformed token"
