"""The hot-path HS256 verifier gives every token the answer PyJWT gives it.

A corpus of valid, forged, broken and borderline tokens goes through both (the API's
:class:`HS256Verifier` and PyJWT as :class:`Verifier` used it before); the verdicts (claims, or
error code and reason) must be equal, under every configuration that changes a rule.
The few places where we are deliberately stricter are listed and checked on their own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from leaderboard.auth import TokenError, Verifier, check_user_id
from leaderboard.config import Settings
from leaderboard.hs256 import HS256Verifier

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
OLD = "the-previous-secret-still-verifying-tokens"
WRONG = "another-secret-that-is-long-enough-for-hs256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: Any, payload: Any, secret: str = SECRET) -> str:
    """A token built by hand: any header, any payload (bytes are taken as they are)."""
    head = _b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    body = _b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


HS = {"alg": "HS256", "typ": "JWT"}


def _claims(now: int, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "exp": now + 300}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def _flip_last(token: str) -> str:
    """The same signature bytes spelled differently (unused low bits set)."""
    head, body, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return f"{head}.{body}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) ^ 1]}"


def _corpus(now: int) -> dict[str, str]:
    """The tokens, made relative to ``now`` (the time the test runs, not when it was collected)."""
    good = _signed(HS, _claims(now))
    return {
        "valid": good,
        "valid-old-secret": _signed(HS, _claims(now), OLD),
        "bad-signature": _signed(HS, _claims(now), WRONG),
        "padded-segments": ".".join(s + "=" * (-len(s) % 4) for s in good.split(".")),
        "over-padded": good + "===",
        "non-canonical-signature": _flip_last(good),
        "truncated-signature": good[:-2],
        "no-signature": good.rsplit(".", 1)[0] + ".",
        "two-segments": good.rsplit(".", 1)[0],
        "four-segments": good + ".AAAA",
        "empty": "",
        "dots": "..",
        "junk-characters": good.replace(good.split(".")[1][:4], "!!!!", 1),
        "whitespace": good[:10] + " " + good[10:],
        "non-ascii": good + "é",
        "header-not-json": _signed(b"{alg", _claims(now)),
        "header-array": _signed(["HS256"], _claims(now)),
        "payload-not-json": _signed(HS, b"{sub"),
        "payload-array": _signed(HS, ["alice"]),
        "payload-string": _signed(HS, "alice"),
        "alg-none": _b64(json.dumps({"alg": "none"}).encode())
        + "."
        + _b64(json.dumps(_claims(now)).encode())
        + ".",
        "alg-missing": _signed({"typ": "JWT"}, _claims(now)),
        "alg-hs512": _signed({"alg": "HS512"}, _claims(now)),
        "alg-rs256": _signed({"alg": "RS256"}, _claims(now)),
        "alg-lowercase": _signed({"alg": "hs256"}, _claims(now)),
        "kid-string": _signed({**HS, "kid": "k1"}, _claims(now)),
        "kid-number": _signed({**HS, "kid": 1}, _claims(now)),
        "no-exp": _signed(HS, _claims(now, exp=None)),
        "exp-null": _signed(HS, {"sub": "alice", "exp": None}),
        "no-sub": _signed(HS, _claims(now, sub=None)),
        "sub-number": _signed(HS, _claims(now, sub=7)),
        "sub-empty": _signed(HS, _claims(now, sub="")),
        "sub-long": _signed(HS, _claims(now, sub="x" * 129)),
        "sub-control": _signed(HS, _claims(now, sub="a\nb")),
        "expired": _signed(HS, _claims(now, exp=now - 3600)),
        "expired-within-leeway": _signed(HS, _claims(now, exp=now - 5)),
        "exp-float": _signed(HS, _claims(now, exp=now + 300.7)),
        "exp-object": _signed(HS, _claims(now, exp={"at": now})),
        "exp-huge": _signed(HS, _claims(now, exp=10**15)),
        "nbf-future": _signed(HS, _claims(now, nbf=now + 3600)),
        "nbf-within-leeway": _signed(HS, _claims(now, nbf=now + 5)),
        "nbf-past": _signed(HS, _claims(now, nbf=now - 60)),
        "nbf-list": _signed(HS, _claims(now, nbf=[1])),
        "iat-future": _signed(HS, _claims(now, iat=now + 3600)),
        "iat-past": _signed(HS, _claims(now, iat=now - 60)),
        "iat-object": _signed(HS, _claims(now, iat={})),
        "jti-string": _signed(HS, _claims(now, jti="j-1")),
        "jti-number": _signed(HS, _claims(now, jti=5)),
        "iss-right": _signed(HS, _claims(now, iss="https://id.example")),
        "iss-wrong": _signed(HS, _claims(now, iss="https://evil.example")),
        "iss-number": _signed(HS, _claims(now, iss=3)),
        "aud-right": _signed(HS, _claims(now, aud="lb")),
        "aud-in-list": _signed(HS, _claims(now, aud=["other", "lb"])),
        "aud-wrong": _signed(HS, _claims(now, aud="other")),
        "aud-list-wrong": _signed(HS, _claims(now, aud=["other"])),
        "aud-list-mixed": _signed(HS, _claims(now, aud=["lb", 3])),
        "aud-empty": _signed(HS, _claims(now, aud="")),
        "aud-number": _signed(HS, _claims(now, aud=5)),
        "iss-and-aud": _signed(HS, _claims(now, iss="https://id.example", aud="lb")),
        "extra-claims": _signed(HS, _claims(now, role="admin", n=[1, 2, {"x": None}])),
    }


def _stricter(now: int) -> dict[str, str]:
    # Deliberately stricter than PyJWT (RFC 7519 section 2: NumericDate is a JSON number;
    # RFC 7515 section 4.1.11: refuse a critical extension you do not implement).
    return {
        "exp-numeric-string": _signed(HS, _claims(now, exp=str(now + 300))),
        "exp-true": _signed(HS, _claims(now, exp=True)),
        "nbf-string": _signed(HS, _claims(now, nbf="0")),
        "crit-b64": _signed({**HS, "crit": ["b64"], "b64": True}, _claims(now)),
    }


CORPUS_NAMES = list(_corpus(0))
STRICTER_NAMES = list(_stricter(0))

CONFIGS = {
    "plain": {"jwt_leeway_s": 10.0},
    "no-leeway": {"jwt_leeway_s": 0.0},
    "iss-and-aud": {"jwt_issuer": "https://id.example", "jwt_audience": "lb"},
}


def _verdict(verify: Any, token: str) -> tuple[str, Any]:
    try:
        return "ok", verify(token)
    except TokenError as exc:
        return exc.code, exc.message


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_the_same_verdict_as_pyjwt(config: dict[str, Any], name: str) -> None:
    verifier = Verifier(Settings(jwt_secret=f"{SECRET},{OLD}", **config))
    token = _corpus(int(time.time()))[name]

    def reference(t: str) -> dict[str, Any]:
        # PyJWT, each secret in turn on a bad signature (as the rotation used it), then the
        # API's own rule on `sub` (a user id it can store)
        try:
            claims = verifier.pyjwt_claims(t, SECRET)
        except TokenError as exc:
            if exc.message != "bad signature":
                raise
            claims = verifier.pyjwt_claims(t, OLD)
        check_user_id(claims["sub"])
        verifier.check_lifetime(claims)
        return claims

    assert _verdict(verifier.claims, token) == _verdict(reference, token)


@pytest.mark.parametrize("name", STRICTER_NAMES)
def test_stricter_than_pyjwt_where_the_rfcs_say_so(name: str) -> None:
    with pytest.raises(TokenError) as err:
        HS256Verifier([SECRET], leeway=10).claims(_stricter(int(time.time()))[name])
    assert (err.value.code, err.value.message) == ("invalid_token", "malformed token")


def test_the_corpus_covers_every_verdict() -> None:
    """The comparison above means something only if the corpus reaches every outcome."""
    verifier = Verifier(Settings(jwt_secret=f"{SECRET},{OLD}", jwt_leeway_s=10.0))
    strict = Verifier(
        Settings(jwt_secret=SECRET, jwt_issuer="https://id.example", jwt_audience="lb")
    )
    seen = set()
    for token in _corpus(int(time.time())).values():
        for outcome, detail in (_verdict(verifier.claims, token), _verdict(strict.claims, token)):
            seen.add("ok" if outcome == "ok" else detail)
    assert {
        "ok",
        "malformed token",
        "bad signature",
        "the token is not signed with HS256",
        "the token has expired",
        "the token is not valid yet",
        "the token has no 'exp' claim",
        "the token has no 'sub' claim",
        "the token has no 'iss' claim",
        "the token has no 'aud' claim",
        "wrong issuer",
        "wrong audience",
        "the token's 'sub' is not a valid user id",
    } <= seen


def test_a_secret_rotated_out_no_longer_verifies() -> None:
    token = _corpus(int(time.time()))["valid-old-secret"]
    assert HS256Verifier([SECRET, OLD]).claims(token)["sub"] == "alice"
    with pytest.raises(TokenError) as err:
        HS256Verifier([SECRET]).claims(token)
    assert err.value.message == "bad signature"


def test_claims_are_checked_against_the_clock_given() -> None:
    verifier = HS256Verifier([SECRET], leeway=0)
    token = _signed(HS, {"sub": "alice", "exp": 1_000, "nbf": 900})
    assert verifier.claims(token, now=950)["sub"] == "alice"
    for now, message in ((899, "the token is not valid yet"), (1_000, "the token has expired")):
        with pytest.raises(TokenError) as err:
            verifier.claims(token, now=now)
        assert err.value.message == message
    assert jwt.decode(token, SECRET, ["HS256"], options={"verify_exp": False})["nbf"] == 900


@pytest.mark.parametrize(
    "secret", ["-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----", "ssh-ed25519 AAAA"]
)
def test_a_public_key_is_refused_as_a_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="PEM or SSH"):
        HS256Verifier([SECRET, secret])
