"""JWT verification (RFC 8725): pinned algorithm, required claims, clear 401 codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from leaderboard import auth
from leaderboard.auth import TokenError, Verifier
from leaderboard.config import Settings
from tests.apiclient import Api

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
WRONG = "another-secret-that-is-long-enough-for-hs256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_token(alg: str, digest: Any, secret: str) -> str:
    """A token signed by hand (PyJWT would warn about the key length for HS512)."""
    signing_input = (
        _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(_claims()).encode())
    )
    mac = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(mac)}"


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 300, **extra}


async def _status_and_code(api: Api, headers: dict[str, str]) -> tuple[int, str]:
    response = await api.client.post(
        "/api/action/complete", json={"actionId": "verify-email"}, headers=headers
    )
    return response.status_code, response.json()["error"]["code"]


async def test_no_token_is_missing_token(api: Api) -> None:
    assert await _status_and_code(api, {}) == (401, "missing_token")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer    ", "Basic YWxpY2U6c2VjcmV0", "Bearer not.a.jwt", "Bearer a.b", "token"],
)
async def test_a_malformed_authorization_header_is_invalid_token(api: Api, header: str) -> None:
    assert await _status_and_code(api, {"Authorization": header}) == (401, "invalid_token")


def _secret(api: Api) -> str:
    from leaderboard.auth import hs256_secret

    return hs256_secret(api.settings)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda s: jwt.encode(_claims(), WRONG, "HS256"), id="bad-signature"),
        pytest.param(lambda s: _hmac_token("HS512", hashlib.sha512, s), id="other-algorithm"),
        pytest.param(
            lambda s: (
                _b64(b'{"alg":"none","typ":"JWT"}')
                + "."
                + _b64(json.dumps(_claims()).encode())
                + "."
            ),
            id="alg-none",
        ),
        pytest.param(lambda s: jwt.encode({"exp": int(time.time()) + 60}, s, "HS256"), id="no-sub"),
        pytest.param(lambda s: jwt.encode({"sub": "alice"}, s, "HS256"), id="no-exp"),
        pytest.param(lambda s: jwt.encode(_claims(sub=""), s, "HS256"), id="empty-sub"),
        pytest.param(lambda s: jwt.encode(_claims(sub="x" * 129), s, "HS256"), id="long-sub"),
        pytest.param(lambda s: jwt.encode(_claims(sub="a\nb"), s, "HS256"), id="control-char"),
        pytest.param(
            lambda s: jwt.encode(_claims(nbf=int(time.time()) + 3600), s, "HS256"), id="not-yet"
        ),
    ],
)
async def test_forged_or_incomplete_tokens_are_invalid_token(
    api: Api, forge: Callable[[str], str]
) -> None:
    token = forge(_secret(api))
    assert await _status_and_code(api, {"Authorization": f"Bearer {token}"}) == (
        401,
        "invalid_token",
    )


async def test_an_expired_token_is_token_expired(api: Api) -> None:
    token = api.token("alice", ttl=-60)
    assert await _status_and_code(api, {"Authorization": f"Bearer {token}"}) == (
        401,
        "token_expired",
    )


async def test_a_rejected_token_changes_nothing_and_is_not_rate_counted(
    api: Api, new_user: Callable[[], str]
) -> None:
    user = new_user()
    bad = jwt.encode(_claims(sub=user), WRONG, "HS256")
    for _ in range(12):
        await _status_and_code(api, {"Authorization": f"Bearer {bad}"})
    ok = await api.complete(user, "verify-email")
    assert ok.status_code == 200
    assert ok.headers["RateLimit-Remaining"] == "9"


def test_small_clock_skew_is_tolerated_by_the_leeway() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_leeway_s=10)
    verifier = Verifier(settings)
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) - 3}, SECRET, "HS256")
    assert verifier.decode(token) == "bob"


def test_issuer_and_audience_are_checked_when_configured() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_issuer="https://id.example", jwt_audience="lb")
    verifier = Verifier(settings)
    good = jwt.encode(_claims(iss="https://id.example", aud="lb"), SECRET, "HS256")
    assert verifier.decode(good) == "alice"
    for claims in (
        _claims(iss="https://evil.example", aud="lb"),
        _claims(iss="https://id.example"),
    ):
        with pytest.raises(TokenError) as err:
            verifier.decode(jwt.encode(claims, SECRET, "HS256"))
        assert err.value.code == "invalid_token"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_rs256_with_a_public_key_rejects_hs256_signed_with_that_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = _pem(private)
    verifier = Verifier(Settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    assert await verifier.user_id(jwt.encode(_claims(), private, "RS256")) == "alice"
    # Algorithm confusion: an HS256 token "signed" with the public key must not pass.
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64(json.dumps(_claims()).encode())
    signature = _b64(
        hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    )
    with pytest.raises(TokenError) as err:
        await verifier.user_id(f"{header}.{payload}.{signature}")
    assert err.value.code == "invalid_token"


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, ec.EllipticCurvePrivateKey]]]:
    """A JWKS endpoint on 127.0.0.1 whose key set the test can rotate."""
    keys: dict[str, ec.EllipticCurvePrivateKey] = {"k1": ec.generate_private_key(ec.SECP256R1())}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            jwks = {
                "keys": [
                    {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid}
                    for kid, k in keys.items()
                ]
            }
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", keys
    finally:
        server.shutdown()
        server.server_close()


async def test_es256_through_a_jwks_url_follows_key_rotation(
    jwks_server: tuple[str, dict[str, ec.EllipticCurvePrivateKey]],
) -> None:
    url, keys = jwks_server
    verifier = Verifier(Settings(jwt_algorithm="ES256", jwt_jwks_url=url, jwt_jwks_cooldown_s=0))
    token = jwt.encode(_claims(), keys["k1"], "ES256", headers={"kid": "k1"})
    assert await verifier.user_id(token) == "alice"

    keys["k2"] = ec.generate_private_key(ec.SECP256R1())  # the issuer rotates in a new key
    rotated = jwt.encode(_claims(sub="bob"), keys["k2"], "ES256", headers={"kid": "k2"})
    assert await verifier.user_id(rotated) == "bob"

    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(_claims(), stranger, "ES256", headers={"kid": "k1"})
    with pytest.raises(TokenError):
        await verifier.user_id(forged)


async def test_a_cached_token_still_expires_on_time() -> None:
    verifier = Verifier(Settings(jwt_secret=SECRET, jwt_leeway_s=0))
    token = jwt.encode({"sub": "carol", "exp": time.time() + 1.5}, SECRET, "HS256")
    assert await verifier.user_id(token) == "carol"
    assert await verifier.user_id(token) == "carol"  # from the cache
    assert verifier._verified[token][1] <= time.time() + 1.5

    verifier._verified[token] = (
        "carol",
        time.time() - 1,
        frozenset(),
        time.time() - 1,
    )  # as if its expiry had passed
    stale = jwt.encode({"sub": "carol", "exp": int(time.time()) - 5}, SECRET, "HS256")
    verifier._verified[stale] = ("carol", time.time() - 1, frozenset(), time.time() - 5)
    with pytest.raises(TokenError) as err:
        await verifier.user_id(stale)
    assert err.value.code == "token_expired"


async def test_hs256_secrets_rotate_without_logging_anyone_out() -> None:
    """`LEADERBOARD_JWT_SECRET=new,old`: tokens of either verify; only the first signs."""
    from leaderboard import auth

    new = "the-new-secret-that-is-long-enough-for-hs256"
    settings = Settings(jwt_secret=f"{new},{SECRET}")
    verifier = Verifier(settings)
    old_token = jwt.encode(_claims(sub="old"), SECRET, "HS256")
    assert await verifier.user_id(old_token) == "old"
    minted = auth.mint(settings, "fresh")
    assert jwt.decode(minted, new, algorithms=["HS256"])["sub"] == "fresh"
    assert await verifier.user_id(minted) == "fresh"
    with pytest.raises(TokenError) as err:  # a secret in neither place still fails
        await verifier.user_id(jwt.encode(_claims(), WRONG, "HS256"))
    assert (err.value.code, err.value.message) == ("invalid_token", "bad signature")
    expired = jwt.encode(_claims(exp=int(time.time()) - 60), SECRET, "HS256")
    with pytest.raises(TokenError) as err:  # an old-secret token is still checked in full
        await verifier.user_id(expired)
    assert err.value.code == "token_expired"
    # after the rotation, the old secret is dropped: its tokens stop verifying
    with pytest.raises(TokenError):
        await Verifier(Settings(jwt_secret=new)).user_id(old_token)


def test_every_rotated_secret_must_be_long_enough() -> None:
    from leaderboard.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="each secret must be at least 32 bytes"):
        load_settings(jwt_secret=f"{SECRET},short")


async def test_an_oversized_token_is_refused_before_it_is_decoded() -> None:
    verifier = Verifier(Settings(jwt_secret=SECRET))
    big = jwt.encode(_claims(pad="x" * 9000), SECRET, "HS256")
    with pytest.raises(TokenError) as err:
        await verifier.user_id(big)
    assert (err.value.code, err.value.message) == ("invalid_token", "the token is too large")


async def test_a_token_valid_for_longer_than_the_maximum_lifetime_is_refused() -> None:
    verifier = Verifier(Settings(jwt_secret=SECRET, jwt_max_lifetime_s=3600, jwt_leeway_s=0))
    year_3000 = jwt.encode(_claims(exp=32503680000), SECRET, "HS256")
    with pytest.raises(TokenError) as err:
        await verifier.user_id(year_3000)
    assert err.value.message == "the token's lifetime exceeds the allowed maximum"
    within = jwt.encode(_claims(exp=int(time.time()) + 3500), SECRET, "HS256")
    assert await verifier.user_id(within) == "alice"
    with pytest.raises(ValueError, match="longer than the API accepts"):
        auth.mint(Settings(jwt_secret=SECRET, jwt_max_lifetime_s=3600), "alice", ttl=7200)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://id.example/.well-known/jwks.json", True),
        ("http://127.0.0.1:8080/jwks.json", True),
        ("http://localhost/jwks.json", True),
        ("http://id.example/.well-known/jwks.json", False),
        ("ftp://id.example/jwks.json", False),
    ],
)
def test_a_jwks_url_is_https_or_loopback(url: str, accepted: bool) -> None:
    if accepted:
        assert Settings(jwt_algorithm="ES256", jwt_jwks_url=url).jwt_jwks_url == url
    else:
        with pytest.raises(ValidationError, match="must be https://"):
            Settings(jwt_algorithm="ES256", jwt_jwks_url=url)


async def test_the_jwks_clients_error_text_stays_in_the_log(
    jwks_server: tuple[str, dict[str, ec.EllipticCurvePrivateKey]],
) -> None:
    url, _ = jwks_server
    verifier = Verifier(Settings(jwt_algorithm="ES256", jwt_jwks_url=url, jwt_jwks_cooldown_s=0))
    unknown = jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), "ES256",
                         headers={"kid": "nobody-knows"})  # fmt: skip
    with pytest.raises(TokenError) as err:
        await verifier.user_id(unknown)
    assert err.value.message == "no usable signing key"  # no URL, no library text
