"""HS256 JWT verification on the hot path: the checks PyJWT makes, at a quarter of its cost.

Why not PyJWT here: under `make bench` its HS256 ``decode`` was a fifth of the API's CPU per
completion (it re-inspects the key on every call, to refuse PEM, SSH, DER and JSON keys, and
validates base64 one character at a time in Python). The key is checked once, at start-up
(``Settings`` refuses secrets shorter than the hash, this class a PEM or SSH key given as a
secret); each token costs one regex match per segment, C base64, one HMAC through OpenSSL and
two small JSON parses. RS256/ES256 stay with PyJWT (:mod:`leaderboard.auth`).

The rules are RFC 8725's, in PyJWT's order, so a token gets the same answer from both
(``tests/api/test_hs256.py`` compares them on a corpus of forged and broken tokens):

1. three base64url segments (PyJWT's tolerance for trailing ``=`` kept; canonical encodings
   only, so a signature has one spelling); a JSON object as header;
2. ``kid`` a string if present; a ``crit`` header is refused (we implement no extension:
   RFC 7515 section 4.1.11);
3. ``alg`` must be HS256 (from configuration, never from the token: ``none`` and
   algorithm confusion fail here), then the signature, with each configured secret in turn;
4. only then is the payload parsed: a JSON object; ``exp`` and ``sub`` required; ``iat`` and
   ``nbf`` not in the future, ``exp`` not past (each with the leeway); ``iss``/``aud`` when
   configured (a token with an ``aud`` is refused when none is configured, as PyJWT does);
   ``sub`` and ``jti`` strings.

Stricter than PyJWT in two places: NumericDate claims must be JSON numbers (RFC 7519 section 2;
PyJWT also takes numeric strings and booleans), and any ``crit`` header is refused (PyJWT
implements ``b64``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from typing import Any, Literal

import orjson

ErrorCode = Literal["invalid_token", "token_expired"]

# PyJWT accepts up to two '=' of padding (some issuers add it); so do we.
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_ASYMMETRIC = ("-----BEGIN", "ssh-", "ecdsa-sha2-")


class TokenError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def _malformed() -> TokenError:
    return TokenError("invalid_token", "malformed token")


def _segment(raw: bytes) -> bytes:
    if not _SEGMENT.fullmatch(raw):
        raise _malformed()
    stripped = raw.rstrip(b"=")
    if (len(stripped) != len(raw) and len(raw) % 4) or len(stripped) % 4 == 1:
        raise _malformed()
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except binascii.Error:
        raise _malformed() from None
    # Unused low bits must be zero: one spelling per value.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise _malformed()
    return decoded


def _object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _malformed() from None
    if not isinstance(value, dict):
        raise _malformed()
    return value


def _date(value: Any) -> int:
    """A NumericDate claim, in whole seconds as PyJWT compares them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed()
    try:
        return int(value)
    except (OverflowError, ValueError):  # inf, nan
        raise _malformed() from None


class HS256Verifier:
    """Verifies HS256 tokens against ``secrets`` (tried in order: rotation)."""

    def __init__(
        self,
        secrets: list[str],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        if not secrets or any(not s for s in secrets):
            raise ValueError("HS256 needs at least one non-empty secret")
        if any(s.lstrip().startswith(_ASYMMETRIC) for s in secrets):
            # A public key used as an HMAC secret is the algorithm-confusion setup (RFC 8725
            # section 2.1): refuse it where it is configured, not on every token.
            raise ValueError("an HS256 secret must not be a PEM or SSH key")
        self._keys = [s.encode() for s in secrets]
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def claims(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The verified claims; :class:`TokenError` (PyJWT's codes and reasons) otherwise."""
        if not token.isascii():
            raise _malformed()
        raw = token.encode()
        signing_input, dot, crypto = raw.rpartition(b".")
        header_b64, dot2, payload_b64 = signing_input.partition(b".")
        if not dot or not dot2:
            raise _malformed()
        header = _object(_segment(header_b64))
        payload_raw = _segment(payload_b64)
        signature = _segment(crypto)
        if "kid" in header and not isinstance(header["kid"], str):
            raise _malformed()
        if "crit" in header:
            raise _malformed()
        if header.get("alg") != "HS256":
            raise TokenError("invalid_token", "the token is not signed with HS256")
        if not any(
            hmac.compare_digest(hmac.digest(key, signing_input, "sha256"), signature)
            for key in self._keys
        ):
            raise TokenError("invalid_token", "bad signature")
        claims = _object(payload_raw)
        self._check(claims, time.time() if now is None else now)
        return claims

    def _check(self, claims: dict[str, Any], now: float) -> None:
        for required in ("exp", "sub"):
            if claims.get(required) is None:
                raise TokenError("invalid_token", f"the token has no '{required}' claim")
        leeway = self.leeway
        if "iat" in claims and _date(claims["iat"]) > now + leeway:
            raise TokenError("invalid_token", "the token is not valid yet")
        if "nbf" in claims and _date(claims["nbf"]) > now + leeway:
            raise TokenError("invalid_token", "the token is not valid yet")
        if _date(claims["exp"]) <= now - leeway:
            raise TokenError("token_expired", "the token has expired")
        if self.issuer is not None:
            if "iss" not in claims:
                raise TokenError("invalid_token", "the token has no 'iss' claim")
            if claims["iss"] != self.issuer:
                raise TokenError("invalid_token", "wrong issuer")
        self._check_audience(claims.get("aud"))
        if not isinstance(claims["sub"], str):
            raise _malformed()
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise _malformed()

    def _check_audience(self, aud: Any) -> None:
        if self.audience is None:
            if aud:
                raise TokenError("invalid_token", "wrong audience")
            return
        if not aud:
            raise TokenError("invalid_token", "the token has no 'aud' claim")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or any(not isinstance(a, str) for a in audiences):
            raise TokenError("invalid_token", "wrong audience")
        if self.audience not in audiences:
            raise TokenError("invalid_token", "wrong audience")
