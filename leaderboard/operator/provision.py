"""What the operator provisions for the application once a cluster has a primary: its role,
its database, and the ``<cluster>-app`` Secret with the URI the services connect with.

Pure: SQL text and Secret strings, carried out by the Kubernetes shell and by ``make
chart-up``'s stand-in for it (no API server runs there), so both write exactly the same."""

from __future__ import annotations

from urllib.parse import quote

from leaderboard.db.sql import ident, literal

PG_PORT = 5432
# With durability `required`, once a standby streams: a commit waits for any one of them.
SYNC_STANDBYS = "ANY 1 (*)"


def role_sql(user: str, password: str) -> str:
    """Create the application's login role unless it exists (idempotent)."""
    return (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(user)}) "
        f"THEN CREATE ROLE {ident(user)} LOGIN PASSWORD {literal(password)}; END IF; END $$"
    )


def database_exists_sql(database: str) -> str:
    return f"SELECT 1 FROM pg_database WHERE datname = {literal(database)}"  # noqa: S608


def create_database_sql(database: str, owner: str) -> str:
    return f"CREATE DATABASE {ident(database)} OWNER {ident(owner)}"


def sync_standbys_sql(value: str) -> str:
    return f"ALTER SYSTEM SET synchronous_standby_names = {literal(value)}"


def app_secret(
    cluster: str, namespace: str, user: str, password: str, database: str, *, tls: bool = False
) -> dict[str, str]:
    """The ``-app`` Secret's strings; the host is the ``-rw`` Service, so the URI follows the
    primary through every failover without being rewritten. With TLS the URI says
    ``sslmode=verify-full``: the certificate names the Service, and the pods that use the URI
    point libpq's ``PGSSLROOTCERT`` at the CA."""
    host = f"{cluster}-rw.{namespace}.svc"
    uri = f"postgresql://{user}:{quote(password, safe='')}@{host}:{PG_PORT}/{database}"
    strings = {
        "username": user, "password": password, "dbname": database, "host": host,
        "port": str(PG_PORT), "uri": uri + ("?sslmode=verify-full" if tls else ""),
    }  # fmt: skip
    if tls:
        strings["sslmode"] = "verify-full"
    return strings
