"""Start-up checks of the credentials and certificates a service was given.

A wrong password or an untrusted certificate does not heal by retrying, so the process stops
at start with one line that says which (``leaderboard api: Redis at ...: ...``). A server that
is merely down or unreachable is no reason to stop: the API answers from PostgreSQL meanwhile,
waits for a primary, and every connection is retried. Later failures of the same kind make
``/readyz`` answer 503 (the services' own reconnects meet them).
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import asyncpg
from redis import exceptions as rex

from leaderboard.cache.pipe import RedisPipe

log = logging.getLogger("leaderboard.preflight")


class PreflightError(Exception):
    """One line: which server, and what about the credentials or certificate is wrong."""


def _tls_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, or None when ``exc`` is no TLS failure."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"its certificate is not trusted ({error.verify_message})"
        if isinstance(error, ssl.SSLError):
            return f"the TLS handshake failed ({error.reason or error}); does it speak TLS?"
    return None


def redacted(url: str) -> str:
    """``scheme://host:port``: where, without credentials or file paths."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}"


async def check_redis(url: str, *, timeout: float) -> None:
    """Raise :class:`PreflightError` when Redis refuses the credentials or the certificate."""
    where = f"Redis at {redacted(url)}"
    pipe = RedisPipe(url, timeout=timeout)
    user = pipe.username or "default"
    try:
        await pipe.execute("PING")
    except rex.AuthenticationError as exc:
        if pipe.password is None:
            raise PreflightError(f"{where} requires a password (none in the URL)") from None
        raise PreflightError(f"{where} refused the password of user '{user}': {exc}") from None
    except rex.NoPermissionError as exc:
        raise PreflightError(f"{where}: user '{user}' may not even PING: {exc}") from None
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        if (reason := _tls_reason(exc)) is not None:
            raise PreflightError(f"{where}: {reason}") from None
        log.warning("%s is not reachable yet (%s); starting anyway", where, exc)
    finally:
        await pipe.close()


async def check_postgres(dsn: str, *, timeout: float) -> None:
    """Raise :class:`PreflightError` when PostgreSQL refuses the role, password or certificate."""
    where = f"PostgreSQL at {redacted(dsn)}"
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except asyncpg.InvalidPasswordError as exc:
        raise PreflightError(f"{where} refused the password: {exc}") from None
    except asyncpg.ClientConfigurationError as exc:  # e.g. verify-full and no CA file
        raise PreflightError(f"{where}: {exc}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        # pg_hba.conf said no: e.g. a plaintext connection where only TLS is accepted
        raise PreflightError(f"{where} does not let this connection in: {exc}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if (reason := _tls_reason(exc)) is not None:
            raise PreflightError(f"{where}: {reason}") from None
        if "rejected SSL upgrade" in str(exc):
            raise PreflightError(f"{where} does not offer TLS (sslmode asks for it)") from None
        log.warning("%s is not reachable yet (%s); waiting for it", where, exc)
        return
    await conn.close()
