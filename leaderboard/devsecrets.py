"""Secrets of the local stack: generated once into the run folder, readable by the owner only.

They exist so that a newcomer's stack is not guarded by a password in the repository; they are
never used outside ``LEADERBOARD_ENV=dev`` (production passes real secrets through settings).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_or_create(path: Path, nbytes: int = 32) -> str:
    """Return the secret stored at ``path``, creating it (mode 0600) on first use.

    Creation uses O_EXCL so two processes starting at once agree on one value.
    """
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def jwt_key_path(run_dir: Path) -> Path:
    return run_dir / "dev-jwt.key"


def pg_password_path(run_dir: Path) -> Path:
    return run_dir / "pg-password"


def app_password_path(run_dir: Path) -> Path:
    return run_dir / "pg-app-password"


def redis_password_path(run_dir: Path, user: str) -> Path:
    """TLS mode: the password of a Redis user (``default``, ``api``, ``broadcaster``)."""
    return run_dir / f"redis-{user}-password"
